#include "clients/common/usage.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"

namespace gla {
namespace {

constexpr int kUsageError = 2;

std::string FlagList(const CommandSpec& command) {
  // "--name VALUE" padded to one column, so that the descriptions line up.
  size_t width = 0;
  for (const FlagSpec& f : command.flags) width = std::max(width, f.name.size() + f.value.size() + 3);
  std::string out;
  for (const FlagSpec& f : command.flags) {
    std::string left = absl::StrCat("--", f.name, " ", f.value);
    left.resize(width, ' ');
    absl::StrAppend(&out, "  ", left, "  ", f.help);
    if (!f.default_value.empty()) absl::StrAppend(&out, " (default ", f.default_value, ")");
    out += "\n";
  }
  return out;
}

}  // namespace

std::string ProgramHelp(const ProgramSpec& program) {
  std::string out = absl::StrCat(program.name, ": ", program.summary, "\n\nusage: ", program.name);
  if (program.commands.size() == 1) {
    const CommandSpec& only = program.commands.front();
    if (program.default_command.empty()) absl::StrAppend(&out, " ", only.name);
    absl::StrAppend(&out, " [flags]\n\n", only.summary, "\n\nflags:\n", FlagList(only));
    return out;
  }
  absl::StrAppend(&out, " COMMAND [flags]", program.default_command.empty() ? "" : "  (COMMAND defaults to ",
                  program.default_command, program.default_command.empty() ? "" : ")", "\n\ncommands:\n");
  size_t width = 0;
  for (const CommandSpec& c : program.commands) width = std::max(width, c.name.size());
  for (const CommandSpec& c : program.commands) {
    std::string name = c.name;
    name.resize(width, ' ');
    absl::StrAppend(&out, "  ", name, "  ", c.summary, "\n");
  }
  absl::StrAppend(&out, "\n`", program.name, " COMMAND --help` lists a command's flags.\n");
  return out;
}

std::string CommandHelp(const ProgramSpec& program, const CommandSpec& command) {
  return absl::StrCat("usage: ", program.name, " ", command.name, " [flags]\n\n", command.summary, "\n\nflags:\n",
                      FlagList(command));
}

std::optional<ParsedArgs> ParseCommandLine(const ProgramSpec& program, int argc, char** argv, int* exit_code) {
  absl::StatusOr<ParsedArgs> args = ParseArgs(argc, argv, program);
  if (args.ok() && !args->help) return *std::move(args);
  if (args.ok()) {
    // A program of one command prints it whole either way (its command word may be implicit).
    const bool one_command = args->spec == nullptr || program.commands.size() == 1;
    const std::string text = one_command ? ProgramHelp(program) : CommandHelp(program, *args->spec);
    std::fputs(text.c_str(), stdout);
    *exit_code = 0;
    return std::nullopt;
  }
  // Point at the help that answers the mistake: the command's flags, or the list of commands.
  const CommandSpec* command = argc >= 2 ? program.Find(argv[1]) : nullptr;
  if (command == nullptr && !program.default_command.empty() && (argc < 2 || argv[1][0] == '-'))
    command = program.Find(program.default_command);
  const bool per_command = command != nullptr && program.commands.size() > 1;
  const std::string see = per_command ? absl::StrCat(program.name, " ", command->name, " --help")
                                      : absl::StrCat(program.name, " --help");
  std::fprintf(stderr, "%s: error: %s (see `%s`)\n", program.name.c_str(), std::string(args.status().message()).c_str(),
               see.c_str());
  if (argc < 2) std::fprintf(stderr, "\n%s", ProgramHelp(program).c_str());
  *exit_code = kUsageError;
  return std::nullopt;
}

}  // namespace gla
