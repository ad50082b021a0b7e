#include "engine/model/cpu_model.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "models/dtype.h"
#include "models/status_macros.h"

namespace gla {

namespace {
// The fused copy is the only one kept.
void Release(Weight& w) {
  std::vector<float>().swap(w.data);
  w.int8.reset();
  w.fp8.reset();
}
}  // namespace

struct CpuModel::Workspace {
  int64_t N = 0;
  std::vector<float> x, h, proj, conv, gk, o, og, gate_up, act;
};

CpuModel::CpuModel(Checkpoint ck, const CpuModelOptions& options)
    : ck_(std::move(ck)), options_(options), layout_(ck_.config), plan_(ck_.config) {}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Load(const std::string& dir, const CpuModelOptions& options) {
  ASSIGN_OR_RETURN(Checkpoint ck, LoadCheckpoint(dir));
  return FromCheckpoint(std::move(ck), options);
}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::FromCheckpoint(Checkpoint ck, const CpuModelOptions& options) {
  if (options.sub_chunk <= 0 || options.chunk < options.sub_chunk || options.chunk % options.sub_chunk != 0)
    return absl::InvalidArgumentError(absl::StrCat("chunk ", options.chunk, " must be a positive multiple of sub_chunk ",
                                                   options.sub_chunk));
  cpu::SetLinearThreads(options.threads);
  CpuModelOptions run = options;
  // A pre-quantized checkpoint runs in its own form: INT8 as INT8 (whatever else was asked); FP8 as
  // FP8 values computed in fp32 unless INT8 was asked (then quantized to INT8 from those values).
  if (ck.config.quantization && ck.config.quantization->kind == CheckpointQuantization::Kind::kInt8)
    run.weights = WeightFormat::kInt8;
  if (ck.config.quantization && ck.config.quantization->kind == CheckpointQuantization::Kind::kFp8E4M3 &&
      run.weights == WeightFormat::kNative)
    run.weights = WeightFormat::kFp8;
  std::unique_ptr<CpuModel> m(new CpuModel(std::move(ck), run));
  RETURN_IF_ERROR(m->FuseWeights());
  return m;
}

int64_t CpuModel::step_weight_bytes() const {
  const int64_t table = static_cast<int64_t>(ck_.weights.embeddings.data.size() * sizeof(float));
  return weight_bytes() - (ck_.config.tie_word_embeddings ? 0 : table);
}

absl::StatusOr<CpuModel::Projection> CpuModel::MakeProjection(std::initializer_list<Weight*> parts, int64_t N,
                                                               int64_t K, WeightFormat format, bool fp8_checkpoint,
                                                               const std::string& what) {
  Projection p;
  p.N = N;
  p.K = K;
  if (format == WeightFormat::kFp8) {  // scale * fp8 of each row, computed in fp32
    p.f32.reserve(static_cast<size_t>(N * K));
    for (Weight* w : parts) {
      if (w->data.empty()) continue;  // a part this model does not have
      const int64_t rows = static_cast<int64_t>(w->data.size()) / K;
      if (fp8_checkpoint) {  // its values are FP8 already (scale * q): kept as they are
        p.f32.insert(p.f32.end(), w->data.begin(), w->data.end());
      } else {
        std::vector<uint8_t> q(w->data.size());
        std::vector<float> scale(static_cast<size_t>(rows));
        if (!QuantizeFp8E4M3PerRow(w->data.data(), rows, K, q.data(), scale.data()))
          return absl::InvalidArgumentError(
              absl::StrCat(what, " holds a value that is not finite: --weights fp8 cannot quantize it"));
        for (int64_t i = 0; i < rows * K; ++i) p.f32.push_back(scale[i / K] * Float8E4M3ToFloat(q[i]));
      }
      Release(*w);
    }
    if (static_cast<int64_t>(p.f32.size()) != N * K)
      return absl::InternalError(absl::StrCat(what, ": the parts do not make [", N, ", ", K, "]"));
    return p;
  }
  if (format != WeightFormat::kInt8) {
    p.f32.reserve(static_cast<size_t>(N * K));
    for (Weight* w : parts) {
      p.f32.insert(p.f32.end(), w->data.begin(), w->data.end());
      Release(*w);
    }
    return p;
  }
  p.int8.N = N;
  p.int8.K = K;
  p.int8.q.reserve(static_cast<size_t>(N * K));
  p.int8.scale.reserve(static_cast<size_t>(N));
  for (Weight* w : parts) {
    if (w->data.empty()) continue;  // a part this model does not have
    cpu::Int8Weight made;
    const std::vector<int8_t>* q = nullptr;
    const std::vector<float>* scale = nullptr;
    if (w->int8) {  // the checkpoint's own INT8 rows
      q = &w->int8->q;
      scale = &w->int8->scale;
    } else {
      if (!cpu::QuantizeInt8PerRow(w->data.data(), static_cast<int64_t>(w->data.size()) / K, K, &made))
        return absl::InvalidArgumentError(
            absl::StrCat(what, " holds a value that is not finite: --weights int8 cannot quantize it"));
      q = &made.q;
      scale = &made.scale;
    }
    p.int8.q.insert(p.int8.q.end(), q->begin(), q->end());
    p.int8.scale.insert(p.int8.scale.end(), scale->begin(), scale->end());
    Release(*w);
  }
  if (static_cast<int64_t>(p.int8.q.size()) != N * K || static_cast<int64_t>(p.int8.scale.size()) != N)
    return absl::InternalError(absl::StrCat(what, ": the parts do not make [", N, ", ", K, "]"));
  return p;
}

void CpuModel::Project(const Projection& w, const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t M,
                       float beta) {
  if (!w.int8.q.empty()) cpu::LinearInt8(x, x_stride, w.int8, y, y_stride, M, beta);
  else cpu::Linear(x, x_stride, w.f32.data(), w.N, w.K, y, y_stride, M, beta);
}

absl::Status CpuModel::FuseWeights() {
  const GlaConfig& c = ck_.config;
  const GlaLayerPlan& p = plan_;
  const WeightFormat format = options_.weights;  // FromCheckpoint made it a quantized checkpoint's own form
  const bool fp8_checkpoint =
      c.quantization && c.quantization->kind == CheckpointQuantization::Kind::kFp8E4M3;  // values FP8 already
  fused_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& w = ck_.weights.layers[l];
    FusedLayer& f = fused_[l];
    const std::string layer = absl::StrCat("layer ", l, "'s ");
    ASSIGN_OR_RETURN(f.in_proj, MakeProjection({&w.q_proj, &w.k_proj, &w.v_proj, &w.g_proj, &w.gk_proj0},
                                               p.in_proj.width, p.hidden, format, fp8_checkpoint,
                                               layer + "q/k/v/g/gk_proj.0 weights"));  // g_proj empty without output gate
    ASSIGN_OR_RETURN(f.gate_up, MakeProjection({&w.gate_proj, &w.up_proj}, 2 * p.intermediate, p.hidden, format,
                                               fp8_checkpoint, layer + "gate/up_proj weights"));
    ASSIGN_OR_RETURN(f.gk1, MakeProjection({&w.gk_proj1}, p.k_width, p.gate_rank, format, fp8_checkpoint,
                                           layer + "gk_proj.1 weight"));
    ASSIGN_OR_RETURN(f.o_proj, MakeProjection({&w.o_proj}, p.hidden, p.o_width, format, fp8_checkpoint,
                                              layer + "o_proj weight"));
    ASSIGN_OR_RETURN(f.down, MakeProjection({&w.down_proj}, p.hidden, p.intermediate, format, fp8_checkpoint,
                                            layer + "down_proj weight"));
  }
  return absl::OkStatus();
}

int64_t CpuModel::weight_bytes() const {
  const ModelWeights& w = ck_.weights;
  int64_t floats = static_cast<int64_t>(w.embeddings.data.size() + w.norm.data.size() + w.lm_head.data.size());
  int64_t bytes = 0;
  for (const LayerWeights& l : w.layers)
    for (const Weight* t : {&l.attn_norm, &l.gk_proj1_bias, &l.q_conv, &l.k_conv, &l.v_conv, &l.g_norm, &l.mlp_norm})
      floats += static_cast<int64_t>(t->data.size());
  for (const FusedLayer& f : fused_)
    for (const Projection* p : {&f.in_proj, &f.gk1, &f.o_proj, &f.gate_up, &f.down})
      bytes += static_cast<int64_t>(p->f32.size() * sizeof(float)) + p->int8.bytes();
  return bytes + floats * static_cast<int64_t>(sizeof(float));
}

void CpuModel::AddLoraDeltas(int layer, LoraTarget t, std::span<const Segment> segments,
                             const std::vector<int64_t>& offsets, const float* x, int64_t x_stride, float* y,
                             int64_t y_stride) const {
  std::vector<float> xa;
  for (size_t s = 0; s < segments.size(); ++s) {
    const LoraAdapter* a = segments[s].adapter;
    if (a == nullptr) continue;
    const auto& pair = a->layers[layer][static_cast<int>(t)];
    if (!pair.has_value()) continue;
    const int64_t rows = static_cast<int64_t>(segments[s].tokens.size()), r = pair->a.shape[0];
    const int64_t out = pair->b.shape[0], in = pair->a.shape[1];
    const float* xs = x + offsets[s] * x_stride;
    xa.resize(rows * r);
    cpu::Linear(xs, x_stride, pair->a.data.data(), r, in, xa.data(), r, rows);
    const float scale = static_cast<float>(a->config.scale());
    for (float& v : xa) v *= scale;
    cpu::Linear(xa.data(), r, pair->b.data.data(), out, r, y + offsets[s] * y_stride, y_stride, rows, 1.0f);
  }
}

SequenceState CpuModel::NewState() const { return SequenceState{std::vector<float>(layout_.floats(), 0.0f)}; }

void CpuModel::RoundActivations(float* v, int64_t n) const {
  if (options_.activations != CpuModelOptions::ActivationDType::kBF16) return;
  for (int64_t i = 0; i < n; ++i) v[i] = BFloat16ToFloat(FloatToBFloat16(v[i]));
}

void CpuModel::RunLayer(int l, std::span<const Segment> segments, const std::vector<int64_t>& offsets, Workspace& ws) {
  const GlaLayerPlan& p = plan_;
  const InProjLayout& ip = p.in_proj;
  const LayerWeights& w = ck_.weights.layers[l];
  const FusedLayer& f = fused_[l];
  const int64_t N = ws.N, I = p.intermediate, P = ip.width, D = p.hidden;
  bool has_adapters = false;
  for (const Segment& seg : segments) has_adapters |= seg.adapter != nullptr;
  auto lora = [&](LoraTarget t, const float* x, int64_t x_stride, float* y, int64_t y_stride) {
    if (has_adapters) AddLoraDeltas(l, t, segments, offsets, x, x_stride, y, y_stride);
  };

  // h = RMSNorm(x) w_attn;  proj = h [Wq; Wk; Wv; Wg; Wgk0]^T
  cpu::RmsNorm(ws.x.data(), D, w.attn_norm.data.data(), ws.h.data(), D, N, D, p.eps);
  RoundActivations(ws.h.data(), N * D);
  Project(f.in_proj, ws.h.data(), D, ws.proj.data(), P, N);
  float* proj = ws.proj.data();
  lora(LoraTarget::kQ, ws.h.data(), D, proj + ip.q, P);
  lora(LoraTarget::kK, ws.h.data(), D, proj + ip.k, P);
  lora(LoraTarget::kV, ws.h.data(), D, proj + ip.v, P);
  if (p.output_gate) lora(LoraTarget::kG, ws.h.data(), D, proj + ip.g, P);
  lora(LoraTarget::kGk0, ws.h.data(), D, proj + ip.r, P);

  // gk = gate(h Wgk0^T Wgk1^T + b): the low-rank forget gate.
  Project(f.gk1, proj + ip.r, P, ws.gk.data(), p.k_width, N);
  lora(LoraTarget::kGk1, proj + ip.r, P, ws.gk.data(), p.k_width);
  cpu::LogSigmoidGate(ws.gk.data(), p.k_width, w.gk_proj1_bias.data.data(), N, p.k_width, p.gate);

  // q, k, v come straight from proj, or through the short conv (per sequence: it has history).
  GlaRows rows = p.Rows(proj + ip.q, proj + ip.k, proj + ip.v, P, ws.gk.data(), ws.o.data());
  if (p.short_conv) {
    float* conv = ws.conv.data();
    for (size_t s = 0; s < segments.size(); ++s) {
      const int64_t r0 = offsets[s], T = static_cast<int64_t>(segments[s].tokens.size());
      float* st = segments[s].state;
      const float* src = proj + r0 * P;
      float* dst = conv + r0 * p.conv_width;
      cpu::ShortConvSilu(src + ip.q, P, T, p.q_width, w.q_conv.data.data(), p.conv_size, layout_.q_tail(st, l), dst,
                         p.conv_width);
      cpu::ShortConvSilu(src + ip.k, P, T, p.k_width, w.k_conv.data.data(), p.conv_size, layout_.k_tail(st, l),
                         dst + p.q_width, p.conv_width);
      cpu::ShortConvSilu(src + ip.v, P, T, p.v_width, w.v_conv.data.data(), p.conv_size, layout_.v_tail(st, l),
                         dst + p.q_width + p.k_width, p.conv_width);
    }
    rows = p.Rows(conv, conv + p.q_width, conv + p.q_width + p.k_width, p.conv_width, ws.gk.data(), ws.o.data());
  }

  // The GLA operator: multi-token segments in their prefill form, single tokens one decode step
  // each (in a mixed pack their rows are not contiguous).
  for (size_t s = 0; s < segments.size(); ++s) {
    const int64_t r0 = offsets[s], T = static_cast<int64_t>(segments[s].tokens.size());
    float* S = layout_.S(segments[s].state, l);
    if (T == 1) {
      cpu::GlaDecodeStep(p.Decode(GlaLayerPlan::From(rows, r0), 1, &S));
      continue;
    }
    const GlaSeqParams seq = p.Seq(GlaLayerPlan::From(rows, r0), static_cast<int>(T), S);
    if (options_.gla_form == CpuModelOptions::GlaForm::kRecurrent) cpu::GlaRecurrentNaive(seq);
    else cpu::GlaChunkwise(seq, options_.chunk, options_.sub_chunk);  // sizes checked at load
  }

  // o = RMSNorm_head(o) w_gnorm * swish(g);  x += o Wo^T
  const float* gate = p.output_gate ? proj + ip.g : nullptr;
  cpu::RmsNormSwishGate(ws.o.data(), p.o_width, gate, P, w.g_norm.data.data(), ws.og.data(), p.o_width, N, p.heads,
                        p.head_v, p.eps);
  RoundActivations(ws.og.data(), N * p.o_width);
  Project(f.o_proj, ws.og.data(), p.o_width, ws.x.data(), D, N, /*beta=*/1.0f);
  lora(LoraTarget::kO, ws.og.data(), p.o_width, ws.x.data(), D);

  // x += Wdown( silu(Wgate h') * Wup h' ),  h' = RMSNorm(x) w_mlp
  cpu::RmsNorm(ws.x.data(), D, w.mlp_norm.data.data(), ws.h.data(), D, N, D, p.eps);
  RoundActivations(ws.h.data(), N * D);
  Project(f.gate_up, ws.h.data(), D, ws.gate_up.data(), 2 * I, N);
  RoundActivations(ws.gate_up.data(), N * 2 * I);
  if (has_adapters) {  // the GPU adds an adapter's delta into its bf16 gate|up: rounded again
    lora(LoraTarget::kGate, ws.h.data(), D, ws.gate_up.data(), 2 * I);
    lora(LoraTarget::kUp, ws.h.data(), D, ws.gate_up.data() + I, 2 * I);
    RoundActivations(ws.gate_up.data(), N * 2 * I);
  }
  cpu::SwiGlu(ws.gate_up.data(), 2 * I, ws.act.data(), I, N, I);
  RoundActivations(ws.act.data(), N * I);
  Project(f.down, ws.act.data(), I, ws.x.data(), D, N, /*beta=*/1.0f);
  lora(LoraTarget::kDown, ws.act.data(), I, ws.x.data(), D);
}

absl::Status CpuModel::Forward(std::span<const Segment> segments, std::vector<float>* logits) {
  const GlaConfig& c = ck_.config;
  // Validate everything before touching any state.
  std::vector<int64_t> offsets;
  int64_t N = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const Segment& seg = segments[s];
    if (seg.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("segment ", s, " has no tokens"));
    if (seg.state == nullptr) return absl::InvalidArgumentError(absl::StrCat("segment ", s, " has no state"));
    if (seg.adapter != nullptr && static_cast<int>(seg.adapter->layers.size()) != c.num_hidden_layers)
      return absl::InvalidArgumentError(absl::StrCat("segment ", s, "'s adapter has ", seg.adapter->layers.size(),
                                                     " layers; the model has ", c.num_hidden_layers));
    for (int32_t id : seg.tokens)
      if (id < 0 || id >= c.vocab_size)
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ", c.vocab_size, ")"));
    offsets.push_back(N);
    N += static_cast<int64_t>(seg.tokens.size());
  }
  for (size_t a = 0; a < segments.size(); ++a)
    for (size_t b = a + 1; b < segments.size(); ++b)
      if (segments[a].state == segments[b].state)
        return absl::InvalidArgumentError(absl::StrCat("segments ", a, " and ", b, " share one state"));
  if (N == 0) return absl::OkStatus();

  const int64_t D = plan_.hidden, I = plan_.intermediate;
  Workspace ws;
  ws.N = N;
  ws.x.resize(N * D);
  ws.h.resize(N * D);
  ws.proj.resize(N * plan_.in_proj.width);
  if (plan_.short_conv) ws.conv.resize(N * plan_.conv_width);
  ws.gk.resize(N * plan_.k_width);
  ws.o.resize(N * plan_.o_width);
  ws.og.resize(N * plan_.o_width);
  ws.gate_up.resize(N * 2 * I);
  ws.act.resize(N * I);

  for (size_t s = 0; s < segments.size(); ++s)
    cpu::EmbeddingGather(ck_.weights.embeddings.data.data(), D, segments[s].tokens.data(),
                         static_cast<int64_t>(segments[s].tokens.size()), ws.x.data() + offsets[s] * D);
  for (int l = 0; l < c.num_hidden_layers; ++l) RunLayer(l, segments, offsets, ws);
  if (options_.state_dtype == CpuModelOptions::StateDType::kBF16) {  // what a bf16 slot would keep of the step's states
    const int64_t floats = layout_.floats();
    for (const Segment& seg : segments)
      for (int64_t i = 0; i < floats; ++i) seg.state[i] = BFloat16ToFloat(FloatToBFloat16(seg.state[i]));
  }

  // Final norm and lm_head only on the rows whose logits are wanted.
  std::vector<float> rows;
  int64_t R = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const int64_t T = static_cast<int64_t>(segments[s].tokens.size());
    const int64_t first = segments[s].all_logits ? 0 : T - 1;
    rows.insert(rows.end(), ws.x.begin() + (offsets[s] + first) * D, ws.x.begin() + (offsets[s] + T) * D);
    R += T - first;
  }
  cpu::RmsNorm(rows.data(), D, ck_.weights.norm.data.data(), rows.data(), D, R, D, plan_.eps);
  RoundActivations(rows.data(), R * D);
  const size_t base = logits->size();
  logits->resize(base + static_cast<size_t>(R) * c.vocab_size);
  cpu::Linear(rows.data(), D, ck_.weights.output_embeddings().data.data(), c.vocab_size, D, logits->data() + base,
              c.vocab_size, R);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> CpuModel::Run(std::span<const int32_t> tokens, SequenceState& state, bool all_logits) {
  std::vector<float> logits;
  if (static_cast<int64_t>(state.data.size()) != layout_.floats())
    return absl::InvalidArgumentError("state does not have this model's size");
  const Segment seg{tokens, state.data.data(), all_logits};
  RETURN_IF_ERROR(Forward(std::span<const Segment>(&seg, 1), &logits));
  return logits;
}

}  // namespace gla
