#include "engine/finetune/confined_path.h"

#include <system_error>

#include "absl/strings/str_cat.h"
#include "models/excerpt.h"

namespace gla {

namespace fs = std::filesystem;

namespace {

// Whether `p` lies strictly below `root` (both canonical), compared component by component so
// that "/data-other" is not taken for a file under "/data".
bool IsInside(const fs::path& p, const fs::path& root) {
  auto q = p.begin();
  for (auto r = root.begin(); r != root.end(); ++r, ++q)
    if (q == p.end() || *q != *r) return false;
  return q != p.end();
}

}  // namespace

absl::StatusOr<fs::path> ResolveInside(const std::string& root, const std::string& relative, const std::string& field,
                                       const std::string& root_name, PathKind kind) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat(field, " '", Excerpt(relative, 256), "': ", why));
  };
  if (relative.empty()) return bad("empty");
  if (relative.find('\0') != std::string::npos) return bad("holds a NUL byte");
  const fs::path rel(relative);
  if (rel.is_absolute() || rel.has_root_name() || rel.has_root_directory())
    return bad(absl::StrCat("must be a path relative to ", root_name));
  for (const fs::path& part : rel)
    if (part == "..") return bad("must not hold '..' components");
  std::error_code ec;
  const fs::path base = fs::canonical(root, ec);
  if (ec) return absl::FailedPreconditionError(absl::StrCat(root_name, " ", root, ": ", ec.message()));
  // Every symbolic link on the way is followed here, so a link that leads out is caught below.
  const fs::path target = fs::weakly_canonical(base / rel, ec);
  if (ec) return bad(ec.message());
  if (!IsInside(target, base)) return bad(absl::StrCat("leads outside ", root_name));
  const fs::file_status st = fs::status(target, ec);
  if (ec || !fs::exists(st))
    return bad(absl::StrCat("no such ", kind == PathKind::kDirectory ? "directory" : "file", " in ", root_name));
  if (kind == PathKind::kRegularFile && !fs::is_regular_file(st)) return bad("not a regular file");
  if (kind == PathKind::kDirectory && !fs::is_directory(st)) return bad("not a directory");
  return target;
}

}  // namespace gla
