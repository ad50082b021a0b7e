#include "clients/common/args.h"

#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace gla {
namespace {

bool IsHelp(const std::string& arg) { return arg == "--help" || arg == "-h"; }

}  // namespace

const FlagSpec* CommandSpec::Find(const std::string& flag) const {
  for (const FlagSpec& f : flags)
    if (f.name == flag) return &f;
  return nullptr;
}

const CommandSpec* ProgramSpec::Find(const std::string& command) const {
  for (const CommandSpec& c : commands)
    if (c.name == command) return &c;
  return nullptr;
}

absl::Status ParsedArgs::CheckDeclared(const std::string& name, const double* code_default) const {
  if (spec == nullptr) return absl::OkStatus();  // built by hand, not by ParseArgs: nothing to check against
  const FlagSpec* f = spec->Find(name);
  if (f == nullptr) return absl::InternalError(absl::StrCat(command, " reads --", name, ", which its table does not declare"));
  double table_default = 0;
  if (code_default != nullptr && absl::SimpleAtod(f->default_value, &table_default) && table_default != *code_default)
    return absl::InternalError(absl::StrCat(command, " --", name, ": the help says default ", f->default_value,
                                            ", the code uses ", *code_default));
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParsedArgs::Required(const std::string& name) const {
  if (absl::Status st = CheckDeclared(name, nullptr); !st.ok()) return st;
  auto it = flags.find(name);
  if (it == flags.end()) return absl::InvalidArgumentError(absl::StrCat(command, ": --", name, " is required"));
  return it->second;
}

absl::StatusOr<int> ParsedArgs::Int(const std::string& name, int default_value, int min_value) const {
  const double d = default_value;
  if (absl::Status st = CheckDeclared(name, &d); !st.ok()) return st;
  auto it = flags.find(name);
  if (it == flags.end()) return default_value;
  int v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < min_value)
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer >= ", min_value, ", got '", it->second, "'"));
  return v;
}

absl::StatusOr<double> ParsedArgs::Double(const std::string& name, double default_value, double min_value,
                                          double max_value) const {
  if (absl::Status st = CheckDeclared(name, &default_value); !st.ok()) return st;
  auto it = flags.find(name);
  if (it == flags.end()) return default_value;
  double v = 0;
  if (!absl::SimpleAtod(it->second, &v) || !std::isfinite(v) || v < min_value || v > max_value)
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number in [", min_value, ", ", max_value, "], got '", it->second, "'"));
  return v;
}

absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv, const ProgramSpec& program) {
  ParsedArgs out;
  int first_flag = 2;
  if (argc >= 2 && IsHelp(argv[1])) {
    out.help = true;
    return out;
  }
  if (argc < 2 || std::string(argv[1]).rfind("-", 0) == 0) {
    if (program.default_command.empty()) return absl::InvalidArgumentError("missing command");
    out.command = program.default_command;
    first_flag = 1;
  } else {
    out.command = argv[1];
  }
  out.spec = program.Find(out.command);
  if (out.spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown command '", out.command, "'"));
  for (int i = first_flag; i < argc; ++i) {
    std::string arg = argv[i];
    if (IsHelp(arg)) {
      out.help = true;
      return out;
    }
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
    if (out.spec->Find(arg) == nullptr)
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
