#include "clients/common/args.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gla {

absl::StatusOr<std::string> ParsedArgs::Required(const std::string& name) const {
  auto it = flags.find(name);
  if (it == flags.end()) return absl::InvalidArgumentError(absl::StrCat(command, ": --", name, " is required"));
  return it->second;
}

absl::StatusOr<int> ParsedArgs::Int(const std::string& name, int default_value, int min_value) const {
  auto it = flags.find(name);
  if (it == flags.end()) return default_value;
  int v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < min_value)
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer >= ", min_value, ", got '", it->second, "'"));
  return v;
}

absl::StatusOr<double> ParsedArgs::Double(const std::string& name, double default_value, double min_value,
                                          double max_value) const {
  auto it = flags.find(name);
  if (it == flags.end()) return default_value;
  double v = 0;
  if (!absl::SimpleAtod(it->second, &v) || !std::isfinite(v) || v < min_value || v > max_value)
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number in [", min_value, ", ", max_value, "], got '", it->second, "'"));
  return v;
}

absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv, const std::map<std::string, std::set<std::string>>& known) {
  ParsedArgs out;
  if (argc < 2) return absl::InvalidArgumentError("missing command");
  out.command = argv[1];
  auto cmd = known.find(out.command);
  if (cmd == known.end()) return absl::InvalidArgumentError(absl::StrCat("unknown command '", out.command, "'"));
  for (int i = 2; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) return absl::InvalidArgumentError(absl::StrCat("unexpected argument '", arg, "'"));
    arg = arg.substr(2);
    std::string value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", arg, " needs a value"));
      value = argv[++i];
    }
    if (!cmd->second.count(arg))
      return absl::InvalidArgumentError(absl::StrCat("unknown option --", arg, " for '", out.command, "'"));
    out.flags[arg] = value;
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',')) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) return absl::InvalidArgumentError(absl::StrCat("'", part, "' is not a token id"));
    ids.push_back(id);
  }
  return ids;
}

}  // namespace gla
