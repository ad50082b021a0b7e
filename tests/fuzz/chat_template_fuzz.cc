// Fuzzes the chat template renderer (server/http/chat_template.h) with arbitrary template text:
// a checkpoint's tokenizer_config.json is untrusted input. Promise: parsing and rendering end
// with OK, INVALID_ARGUMENT or RESOURCE_EXHAUSTED, the output within its 4 MiB limit, in bounded
// time and memory (libFuzzer's -timeout and -rss_limit_mb catch the rest), with no UB or crash.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/http/chat_template.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string source(reinterpret_cast<const char*>(data), size);
  auto t = gla::ChatTemplate::Parse(source);
  if (!t.ok()) {
    GLA_FUZZ_CHECK(t.status().code() == absl::StatusCode::kInvalidArgument ||
                       t.status().code() == absl::StatusCode::kResourceExhausted,
                   "parse refused with %s", t.status().ToString().c_str());
    return 0;
  }
  gla::ChatTemplateInput in;
  in.messages = {{"system", "Be brief."}, {"user", "Hello"}, {"assistant", "Hi."}, {"user", "Bye"}};
  in.add_generation_prompt = true;
  in.bos_token = "<s>";
  in.eos_token = "</s>";
  auto out = t->Render(in);
  if (!out.ok()) {
    GLA_FUZZ_CHECK(out.status().code() == absl::StatusCode::kInvalidArgument ||
                       out.status().code() == absl::StatusCode::kResourceExhausted,
                   "render refused with %s", out.status().ToString().c_str());
    return 0;
  }
  GLA_FUZZ_CHECK(out->size() <= (size_t{4} << 20), "output of %zu bytes", out->size());
  return 0;
}
