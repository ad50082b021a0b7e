// How a state pool keeps its states (issue 23's --state_dtype): fp32, or bf16 for half the memory.
// Either way the model updates a state in fp32 and the pool keeps what it returns, so a bf16 pool
// rounds every value to nearest-even at the end of each step (CpuModelOptions::state_dtype measures
// what that costs in accuracy: docs/quantization.md).
//
// Storage is counted in 4-byte words, the unit every copy of a state moves (slots, host buffers,
// session files, the state store, the prefix cache): one fp32 value per word, or two bf16 values
// per word (the lower-addressed value first, as a packed bf16 array lies in memory).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace gla {

enum class StateDType { kF32, kBF16 };

// "f32" / "bf16", as --state_dtype spells them.
const char* StateDTypeName(StateDType dtype);
std::optional<StateDType> ParseStateDType(std::string_view name);

// Words of storage for `values` state values (bf16: rounded up; the last word's second half is
// zero when the count is odd, which no GLA state's is).
inline int64_t StateWords(int64_t values, StateDType dtype) {
  return dtype == StateDType::kBF16 ? (values + 1) / 2 : values;
}

// fp32 values <-> a bf16 state's words (n values; `words` holds StateWords(n, kBF16) of them).
// Rounding is FloatToBFloat16's (nearest-even, NaN kept NaN).
void PackBf16State(const float* values, int64_t n, float* words);
void UnpackBf16State(const float* words, int64_t n, float* values);

// A state's words from one dtype to another (session files and store entries written by a server
// with the other --state_dtype: bf16 -> fp32 is exact, fp32 -> bf16 rounds as a step would).
// `from` holds StateWords(n, from_dtype) words, `to` StateWords(n, to_dtype).
void ConvertStateWords(const float* from, StateDType from_dtype, float* to, StateDType to_dtype, int64_t n);

}  // namespace gla
