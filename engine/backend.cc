#include "engine/backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace gla {

int Backend::vocab_limit() const {
  const int v = config().vocab_size;
  return tokenizer() != nullptr ? std::min(v, tokenizer()->vocab_size()) : v;
}

absl::Status CheckStepItems(std::span<const StepItem> items, int slots) {
  for (size_t i = 0; i < items.size(); ++i) {
    const StepItem& it = items[i];
    if (it.sample_from >= 0) {
      if (static_cast<size_t>(it.sample_from) >= i || !it.tokens.empty() || !it.sample || !it.score_targets.empty() ||
          items[it.sample_from].sample_from >= 0 || !items[it.sample_from].sample)
        return absl::InternalError(absl::StrCat("step item ", i, ": sample_from must name an earlier sampling item"));
      continue;
    }
    if (it.slot < 0 || it.slot >= slots) return absl::InternalError(absl::StrCat("bad slot ", it.slot));
    if (it.score_targets.size() > it.tokens.size() || (!it.score_targets.empty() && it.scored == nullptr))
      return absl::InternalError("scoring: more targets than tokens, or nowhere to put them");
  }
  return absl::OkStatus();
}

}  // namespace gla
