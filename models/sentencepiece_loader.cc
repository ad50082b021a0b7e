// Finds and dlopens libgla_sentencepiece.so (see sentencepiece_adapter.h for why it is isolated).
#include <dlfcn.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "models/sentencepiece_adapter.h"

namespace gla {

namespace {

using LoadFn = SentencePieceAdapter* (*)(const char*, size_t, std::string*);

// RTLD_DEEPBIND is what keeps SentencePiece on its own protobuf. AddressSanitizer refuses it, so
// sanitizer builds load without it: they serve tokenizers only in processes that do not also
// load libprotobuf (tests/e2e says so where it matters). GCC says ASan with __SANITIZE_ADDRESS__,
// clang (the fuzz build) only through __has_feature.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define GLA_ADDRESS_SANITIZER 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(GLA_ADDRESS_SANITIZER)
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL;
#else
constexpr int kDlopenFlags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif

std::vector<std::string> Candidates() {
  std::vector<std::string> out;
  if (const char* env = std::getenv("GLA_SENTENCEPIECE_SHIM")) out.push_back(env);
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) {
    std::string dir(exe, static_cast<size_t>(n));
    dir = dir.substr(0, dir.rfind('/'));
    out.push_back(dir + "/libgla_sentencepiece.so");         // beside the binary (bundles, installs)
    out.push_back(dir + "/../lib/libgla_sentencepiece.so");  // prefix/bin + prefix/lib
  }
  out.push_back(GLA_SENTENCEPIECE_SHIM_BUILD_PATH);  // the build tree
  return out;
}

LoadFn Resolve(std::string* error) {
  static std::once_flag once;
  static LoadFn fn = nullptr;
  static std::string failure;
  std::call_once(once, [] {
    for (const std::string& path : Candidates()) {
      if (access(path.c_str(), R_OK) != 0) continue;
      void* handle = dlopen(path.c_str(), kDlopenFlags);  // kept open for the process's life
      if (handle == nullptr) {
        failure = std::string("cannot load ") + path + ": " + dlerror();
        return;
      }
      fn = reinterpret_cast<LoadFn>(dlsym(handle, "gla_sentencepiece_load_model"));
      if (fn == nullptr) failure = path + ": no gla_sentencepiece_load_model (a shim from another build?)";
      return;
    }
    failure = "libgla_sentencepiece.so not found (beside the binary, in ../lib, or $GLA_SENTENCEPIECE_SHIM)";
  });
  if (fn == nullptr) *error = failure;
  return fn;
}

}  // namespace

std::unique_ptr<SentencePieceAdapter> LoadSentencePieceAdapter(const std::string& serialized_model,
                                                               std::string* error) {
  LoadFn load = Resolve(error);
  if (load == nullptr) return nullptr;
  return std::unique_ptr<SentencePieceAdapter>(load(serialized_model.data(), serialized_model.size(), error));
}

}  // namespace gla
