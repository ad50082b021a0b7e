// LoRA adapters with random weights for serving tests. PEFT's initialisation leaves B = 0 (the
// adapter starts as a no-op), so B is drawn uniformly from [-b_range, b_range] here.
#pragma once

#include <string>
#include <vector>

#include "models/config.h"
#include "models/lora_adapter.h"

namespace gla::testing {

LoraAdapter RandomLoraAdapter(const GlaConfig& config, const std::vector<std::string>& targets, unsigned seed, int r,
                              double alpha, float b_range);

}  // namespace gla::testing
