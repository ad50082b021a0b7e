#include "engine/cuda_sampler.h"

#include <algorithm>
#include <cstring>

#include "engine/sample_row_spec.h"
#include "kernels/sampling.h"
#include "models/status_macros.h"

namespace gla {

namespace {
constexpr int kMaxTop = 32;  // top-n logprobs per token (the server allows up to 20)
static_assert(kMaxTop <= cuda::kSampleMaxTop);
}  // namespace

absl::StatusOr<std::unique_ptr<CudaSampler>> CudaSampler::Create(int max_rows, int vocab, cudaStream_t stream) {
  if (max_rows < 1 || vocab < 1) return absl::InvalidArgumentError("sampler: rows and vocabulary must be positive");
  if (vocab > cuda::kSampleMaxVocab)
    return absl::InvalidArgumentError(
        absl::StrCat("sampler: a vocabulary of ", vocab, "; the GPU sampler takes up to ", cuda::kSampleMaxVocab));
  std::unique_ptr<CudaSampler> s(new CudaSampler());
  s->max_rows_ = max_rows;
  s->vocab_ = vocab;
  s->stream_ = stream;
  // For the current device (the model's): 0 while a row fits in a block's shared memory. Sample's
  // rows are at most max_rows of at most vocab candidates, so this covers every call.
  s->workspace_bytes_ = cuda::SampleWorkspaceBytes(max_rows, vocab);
  // Device: workspace | outputs (token, logprob, top ids, top logprobs).
  const size_t outputs = static_cast<size_t>(max_rows) * (2 + 2 * kMaxTop) * 4;
  ASSIGN_OR_RETURN(s->device_, DeviceMemory::Allocate(s->workspace_bytes_ + outputs, "the sampler"));
  ASSIGN_OR_RETURN(s->host_, PinnedMemory::Allocate(outputs, "sampler results"));
  // Inputs: a mask per row at most (scored rows have none), and a first guess at the rest.
  s->mask_bytes_ = static_cast<size_t>(max_rows) * MaskWords(vocab) * sizeof(uint64_t);
  const size_t inputs = s->mask_bytes_ + static_cast<size_t>(max_rows) * sizeof(cuda::SampleRowSpec) + (64 << 10);
  ASSIGN_OR_RETURN(s->inputs_host_, PinnedMemory::Allocate(inputs, "sampler inputs"));
  ASSIGN_OR_RETURN(s->inputs_device_, DeviceMemory::Allocate(inputs, "sampler inputs"));
  return s;
}

int64_t CudaSampler::device_bytes() const {
  return static_cast<int64_t>(device_.bytes() + inputs_device_.bytes());
}

absl::Status CudaSampler::Sample(const float* logits, int64_t stride, int vocab_limit,
                                 std::span<const SampleRequest> requests, std::vector<SampledToken>* out) {
  out->assign(requests.size(), {});
  if (requests.empty()) return absl::OkStatus();
  const int rows = static_cast<int>(requests.size());
  const int V = std::min<int>(vocab_limit, vocab_);
  if (rows > max_rows_) return absl::InternalError(absl::StrCat("sampler: ", rows, " rows; sized for ", max_rows_));

  // Inputs: the row specs, then per row the distinct ids it has seen with their counts, then the
  // masked rows' masks (mask row m: the m-th masked request's), all in one copy.
  const int words = MaskWords(V);  // the masks' bits are ids < V: the kernel's words per row
  std::vector<cuda::SampleRowSpec> specs;
  PenaltyLists pen;
  std::vector<int> mask_of(rows, -1);  // request -> its mask row
  int masked = 0;
  for (int i = 0; i < rows; ++i) {
    const SampleRequest& q = requests[i];
    if (q.allowed != nullptr) {
      if (q.forced >= 0) return absl::InternalError(absl::StrCat("sampler: row ", i, " is scored and masked"));
      mask_of[i] = masked++;  // masked <= rows <= max_rows: mask_bytes_ holds them
    }
    specs.push_back(MakeSampleRowSpec(*q.params, q.history, q.step, q.row, kMaxTop, &pen, q.forced, mask_of[i]));
  }
  const size_t spec_bytes = specs.size() * sizeof(cuda::SampleRowSpec);
  const size_t pen_bytes = pen.ids.size() * sizeof(int32_t);  // each of the four entry arrays
  static_assert(sizeof(float) == sizeof(int32_t));
  const size_t in_bytes = spec_bytes + 4 * pen_bytes + 64;
  if (inputs_host_.bytes() < in_bytes + mask_bytes_) {  // grows to the largest step seen; never inside a graph
    GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    ASSIGN_OR_RETURN(inputs_host_, PinnedMemory::Allocate(2 * in_bytes + mask_bytes_, "sampler inputs"));
    ASSIGN_OR_RETURN(inputs_device_, DeviceMemory::Allocate(2 * in_bytes + mask_bytes_, "sampler inputs"));
  }
  char* h = inputs_host_.get<char>();
  std::memcpy(h, specs.data(), spec_bytes);
  size_t at = (spec_bytes + 15) / 16 * 16;
  const size_t ids_at = at, all_at = at + pen_bytes, out_at = at + 2 * pen_bytes, bias_at = at + 3 * pen_bytes;
  if (pen_bytes > 0) {
    std::memcpy(h + ids_at, pen.ids.data(), pen_bytes);
    std::memcpy(h + all_at, pen.all_counts.data(), pen_bytes);
    std::memcpy(h + out_at, pen.output_counts.data(), pen_bytes);
    std::memcpy(h + bias_at, pen.bias.data(), pen_bytes);
  }
  const size_t masks_at = (bias_at + pen_bytes + 15) / 16 * 16;  // within in_bytes' 64 spare bytes
  const size_t row_bytes = static_cast<size_t>(words) * sizeof(uint64_t);
  std::vector<int> allowed_ids(rows, V);  // the top-n a row can have
  for (int i = 0; i < rows; ++i) {
    if (mask_of[i] < 0) continue;
    const int n = CopyMaskRow(requests[i].allowed, V, reinterpret_cast<uint64_t*>(h + masks_at + mask_of[i] * row_bytes));
    if (n > 0) allowed_ids[i] = n;  // none: every id, as the CPU sampler and the kernel
  }
  const size_t upload = masked > 0 ? masks_at + masked * row_bytes : bias_at + pen_bytes;
  char* d = inputs_device_.get<char>();
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(d, h, upload, cudaMemcpyHostToDevice, stream_));

  char* outputs = device_.get<char>() + workspace_bytes_;
  cuda::SampleArgs a;
  a.logits = logits;
  a.logits_stride = stride;
  a.vocab_limit = V;
  a.rows = rows;
  a.specs = reinterpret_cast<const cuda::SampleRowSpec*>(d);
  a.penalty_ids = reinterpret_cast<const int32_t*>(d + ids_at);
  a.penalty_all_counts = reinterpret_cast<const int32_t*>(d + all_at);
  a.penalty_output_counts = reinterpret_cast<const int32_t*>(d + out_at);
  a.penalty_bias = reinterpret_cast<const float*>(d + bias_at);
  if (masked > 0) {
    a.masks = reinterpret_cast<const uint64_t*>(d + masks_at);
    a.mask_rows = masked;
    a.mask_words = words;
  }
  a.max_top = kMaxTop;
  a.out_token = reinterpret_cast<int32_t*>(outputs);
  a.out_logprob = reinterpret_cast<float*>(outputs + max_rows_ * 4);
  a.out_top_ids = reinterpret_cast<int32_t*>(outputs + max_rows_ * 8);
  a.out_top_logprobs = reinterpret_cast<float*>(outputs + max_rows_ * (8 + 4 * kMaxTop));
  a.workspace = device_.get();
  a.workspace_bytes = workspace_bytes_;
  GLA_CUDA_RETURN_IF_ERROR(cuda::SampleRows(a, stream_));
  GLA_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_.get(), outputs, host_.bytes(), cudaMemcpyDeviceToHost, stream_));
  GLA_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));

  const char* r = host_.get<char>();
  const int32_t* tokens = reinterpret_cast<const int32_t*>(r);
  const float* logprobs = reinterpret_cast<const float*>(r + max_rows_ * 4);
  const int32_t* top_ids = reinterpret_cast<const int32_t*>(r + max_rows_ * 8);
  const float* top_lp = reinterpret_cast<const float*>(r + max_rows_ * (8 + 4 * kMaxTop));
  for (int i = 0; i < rows; ++i) {
    SampledToken& t = (*out)[i];
    // A kernel that found a mask row out of range says so with -1 (never, from the specs above).
    if (tokens[i] < 0) return absl::InternalError(absl::StrCat("sampler: row ", i, ": no token (mask row ", mask_of[i], ")"));
    t.token = tokens[i];
    t.logprob = logprobs[i];
    const int n = std::min({requests[i].params->logprobs, kMaxTop, allowed_ids[i]});
    for (int j = 0; j < n; ++j) t.top.emplace_back(top_ids[i * kMaxTop + j], top_lp[i * kMaxTop + j]);
  }
  return absl::OkStatus();
}

}  // namespace gla
