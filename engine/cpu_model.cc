#include "engine/cpu_model.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "engine/fused_projection.h"
#include "kernels/activations.h"
#include "kernels/conv.h"
#include "kernels/gla.h"
#include "kernels/linear.h"
#include "kernels/norm.h"
#include "models/status_macros.h"

namespace gla {

namespace {
void AppendRows(std::vector<float>& dst, Weight& w) {
  dst.insert(dst.end(), w.data.begin(), w.data.end());
  std::vector<float>().swap(w.data);  // the fused copy is the only one kept
}
}  // namespace

struct CpuModel::Workspace {
  int64_t N = 0;
  std::vector<float> x, h, proj, conv, gk, o, og, gate_up, act;
};

CpuModel::CpuModel(Checkpoint ck, const CpuModelOptions& options)
    : ck_(std::move(ck)), options_(options), layout_(ck_.config), in_proj_(ck_.config) {}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::Load(const std::string& dir, const CpuModelOptions& options) {
  ASSIGN_OR_RETURN(Checkpoint ck, LoadCheckpoint(dir));
  return FromCheckpoint(std::move(ck), options);
}

absl::StatusOr<std::unique_ptr<CpuModel>> CpuModel::FromCheckpoint(Checkpoint ck, const CpuModelOptions& options) {
  if (options.sub_chunk <= 0 || options.chunk < options.sub_chunk || options.chunk % options.sub_chunk != 0)
    return absl::InvalidArgumentError(absl::StrCat("chunk ", options.chunk, " must be a positive multiple of sub_chunk ",
                                                   options.sub_chunk));
  cpu::SetLinearThreads(options.threads);
  std::unique_ptr<CpuModel> m(new CpuModel(std::move(ck), options));
  m->FuseWeights();
  return m;
}

void CpuModel::FuseWeights() {
  const GlaConfig& c = ck_.config;
  fused_.resize(c.num_hidden_layers);
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& w = ck_.weights.layers[l];
    FusedLayer& f = fused_[l];
    f.in_proj.reserve(static_cast<size_t>(in_proj_.width) * c.hidden_size);
    AppendRows(f.in_proj, w.q_proj);
    AppendRows(f.in_proj, w.k_proj);
    AppendRows(f.in_proj, w.v_proj);
    if (c.use_output_gate) AppendRows(f.in_proj, w.g_proj);
    AppendRows(f.in_proj, w.gk_proj0);
    f.gate_up.reserve(static_cast<size_t>(2) * c.intermediate_size * c.hidden_size);
    AppendRows(f.gate_up, w.gate_proj);
    AppendRows(f.gate_up, w.up_proj);
  }
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

void CpuModel::RunLayer(int l, std::span<const Segment> segments, const std::vector<int64_t>& offsets, Workspace& ws) {
  const GlaConfig& c = ck_.config;
  const LayerWeights& w = ck_.weights.layers[l];
  const FusedLayer& f = fused_[l];
  const int64_t N = ws.N, D = c.hidden_size, I = c.intermediate_size;
  const float eps = static_cast<float>(c.norm_eps);
  bool has_adapters = false;
  for (const Segment& seg : segments) has_adapters |= seg.adapter != nullptr;

  // h = RMSNorm(x) w_attn;  proj = h [Wq; Wk; Wv; Wg; Wgk0]^T
  cpu::RmsNorm(ws.x.data(), D, w.attn_norm.data.data(), ws.h.data(), D, N, D, eps);
  cpu::Linear(ws.h.data(), D, f.in_proj.data(), in_proj_.width, D, ws.proj.data(), in_proj_.width, N);
  if (has_adapters) {
    float* proj = ws.proj.data();
    const int64_t pw = in_proj_.width;
    AddLoraDeltas(l, LoraTarget::kQ, segments, offsets, ws.h.data(), D, proj + in_proj_.q, pw);
    AddLoraDeltas(l, LoraTarget::kK, segments, offsets, ws.h.data(), D, proj + in_proj_.k, pw);
    AddLoraDeltas(l, LoraTarget::kV, segments, offsets, ws.h.data(), D, proj + in_proj_.v, pw);
    if (c.use_output_gate) AddLoraDeltas(l, LoraTarget::kG, segments, offsets, ws.h.data(), D, proj + in_proj_.g, pw);
    AddLoraDeltas(l, LoraTarget::kGk0, segments, offsets, ws.h.data(), D, proj + in_proj_.r, pw);
  }

  // q, k, v come straight from proj, or through the short conv (per sequence: it has history).
  const float* q = ws.proj.data() + in_proj_.q;
  const float* k = ws.proj.data() + in_proj_.k;
  const float* v = ws.proj.data() + in_proj_.v;
  int64_t qkv_stride = in_proj_.width;
  if (c.use_short_conv) {
    const int64_t cw = c.key_dim + c.key_dim_per_group + c.value_dim_per_group;
    for (size_t s = 0; s < segments.size(); ++s) {
      const int64_t r0 = offsets[s], T = static_cast<int64_t>(segments[s].tokens.size());
      float* st = segments[s].state;
      const float* src = ws.proj.data() + r0 * in_proj_.width;
      float* dst = ws.conv.data() + r0 * cw;
      cpu::ShortConvSilu(src + in_proj_.q, in_proj_.width, T, c.key_dim, w.q_conv.data.data(), c.conv_size,
                         layout_.q_tail(st, l), dst, cw);
      cpu::ShortConvSilu(src + in_proj_.k, in_proj_.width, T, c.key_dim_per_group, w.k_conv.data.data(), c.conv_size,
                         layout_.k_tail(st, l), dst + c.key_dim, cw);
      cpu::ShortConvSilu(src + in_proj_.v, in_proj_.width, T, c.value_dim_per_group, w.v_conv.data.data(), c.conv_size,
                         layout_.v_tail(st, l), dst + c.key_dim + c.key_dim_per_group, cw);
    }
    q = ws.conv.data();
    k = q + c.key_dim;
    v = k + c.key_dim_per_group;
    qkv_stride = cw;
  }

  // gk = logsigmoid(h Wgk0^T Wgk1^T + b) / normalizer (clamped): the low-rank forget gate.
  cpu::Linear(ws.proj.data() + in_proj_.r, in_proj_.width, w.gk_proj1.data.data(), c.key_dim_per_group, c.gate_low_rank_dim,
              ws.gk.data(), c.key_dim_per_group, N);
  if (has_adapters)
    AddLoraDeltas(l, LoraTarget::kGk1, segments, offsets, ws.proj.data() + in_proj_.r, in_proj_.width, ws.gk.data(),
                  c.key_dim_per_group);
  cpu::LogSigmoidGate(ws.gk.data(), c.key_dim_per_group, w.gk_proj1_bias.data.data(), N, c.key_dim_per_group,
                      static_cast<float>(c.gate_logit_normalizer), c.clamp_min.has_value(),
                      static_cast<float>(c.clamp_min.value_or(0.0)));

  // The GLA operator: multi-token segments in their prefill form, single tokens in one batched step.
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_k_dim));
  std::vector<int64_t> decode_rows;
  std::vector<float*> decode_states;
  for (size_t s = 0; s < segments.size(); ++s) {
    const int64_t r0 = offsets[s], T = static_cast<int64_t>(segments[s].tokens.size());
    float* S = layout_.S(segments[s].state, l);
    if (T == 1) {
      decode_rows.push_back(r0);
      decode_states.push_back(S);
      continue;
    }
    GlaSeqParams p;
    p.T = static_cast<int>(T);
    p.H = c.num_heads;
    p.Hkv = c.num_kv_heads;
    p.dk = c.head_k_dim;
    p.dv = c.head_v_dim;
    p.q = q + r0 * qkv_stride;
    p.k = k + r0 * qkv_stride;
    p.v = v + r0 * qkv_stride;
    p.q_stride = p.k_stride = p.v_stride = qkv_stride;
    p.g = ws.gk.data() + r0 * c.key_dim_per_group;
    p.g_stride = c.key_dim_per_group;
    p.o = ws.o.data() + r0 * c.value_dim;
    p.o_stride = c.value_dim;
    p.state = S;
    p.scale = scale;
    if (options_.gla_form == CpuModelOptions::GlaForm::kRecurrent) cpu::GlaRecurrentNaive(p);
    else cpu::GlaChunkwise(p, options_.chunk, options_.sub_chunk);  // sizes checked at load
  }
  // Single tokens: one decode step each (in a mixed pack their rows are not contiguous).
  for (size_t i = 0; i < decode_rows.size(); ++i) {
    const int64_t r = decode_rows[i];
    GlaDecodeParams p;
    p.N = 1;
    p.H = c.num_heads;
    p.Hkv = c.num_kv_heads;
    p.dk = c.head_k_dim;
    p.dv = c.head_v_dim;
    p.q = q + r * qkv_stride;
    p.k = k + r * qkv_stride;
    p.v = v + r * qkv_stride;
    p.g = ws.gk.data() + r * c.key_dim_per_group;
    p.o = ws.o.data() + r * c.value_dim;
    p.states = &decode_states[i];
    p.scale = scale;
    cpu::GlaDecodeStep(p);
  }

  // o = RMSNorm_head(o) w_gnorm * swish(g);  x += o Wo^T
  const float* gate = c.use_output_gate ? ws.proj.data() + in_proj_.g : nullptr;
  cpu::RmsNormSwishGate(ws.o.data(), c.value_dim, gate, in_proj_.width, w.g_norm.data.data(), ws.og.data(), c.value_dim, N,
                        c.num_heads, c.head_v_dim, eps);
  cpu::Linear(ws.og.data(), c.value_dim, w.o_proj.data.data(), D, c.value_dim, ws.x.data(), D, N, /*beta=*/1.0f);
  if (has_adapters) AddLoraDeltas(l, LoraTarget::kO, segments, offsets, ws.og.data(), c.value_dim, ws.x.data(), D);

  // x += Wdown( silu(Wgate h') * Wup h' ),  h' = RMSNorm(x) w_mlp
  cpu::RmsNorm(ws.x.data(), D, w.mlp_norm.data.data(), ws.h.data(), D, N, D, eps);
  cpu::Linear(ws.h.data(), D, f.gate_up.data(), 2 * I, D, ws.gate_up.data(), 2 * I, N);
  if (has_adapters) {
    AddLoraDeltas(l, LoraTarget::kGate, segments, offsets, ws.h.data(), D, ws.gate_up.data(), 2 * I);
    AddLoraDeltas(l, LoraTarget::kUp, segments, offsets, ws.h.data(), D, ws.gate_up.data() + I, 2 * I);
  }
  cpu::SwiGlu(ws.gate_up.data(), 2 * I, ws.act.data(), I, N, I);
  cpu::Linear(ws.act.data(), I, w.down_proj.data.data(), D, I, ws.x.data(), D, N, /*beta=*/1.0f);
  if (has_adapters) AddLoraDeltas(l, LoraTarget::kDown, segments, offsets, ws.act.data(), I, ws.x.data(), D);
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

  const int64_t D = c.hidden_size, I = c.intermediate_size;
  Workspace ws;
  ws.N = N;
  ws.x.resize(N * D);
  ws.h.resize(N * D);
  ws.proj.resize(N * in_proj_.width);
  if (c.use_short_conv) ws.conv.resize(N * (c.key_dim + c.key_dim_per_group + c.value_dim_per_group));
  ws.gk.resize(N * c.key_dim_per_group);
  ws.o.resize(N * c.value_dim);
  ws.og.resize(N * c.value_dim);
  ws.gate_up.resize(N * 2 * I);
  ws.act.resize(N * I);

  for (size_t s = 0; s < segments.size(); ++s)
    cpu::EmbeddingGather(ck_.weights.embeddings.data.data(), D, segments[s].tokens.data(),
                         static_cast<int64_t>(segments[s].tokens.size()), ws.x.data() + offsets[s] * D);
  for (int l = 0; l < c.num_hidden_layers; ++l) RunLayer(l, segments, offsets, ws);

  // Final norm and lm_head only on the rows whose logits are wanted.
  std::vector<float> rows;
  int64_t R = 0;
  for (size_t s = 0; s < segments.size(); ++s) {
    const int64_t T = static_cast<int64_t>(segments[s].tokens.size());
    const int64_t first = segments[s].all_logits ? 0 : T - 1;
    rows.insert(rows.end(), ws.x.begin() + (offsets[s] + first) * D, ws.x.begin() + (offsets[s] + T) * D);
    R += T - first;
  }
  cpu::RmsNorm(rows.data(), D, ck_.weights.norm.data.data(), rows.data(), D, R, D, static_cast<float>(c.norm_eps));
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
