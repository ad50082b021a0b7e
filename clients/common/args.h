// A client program's command line, declared once as a table (ProgramSpec): ParseArgs accepts
// exactly the commands and flags the table lists, and --help prints them from the same table
// (clients/common/usage.h), so a flag cannot be accepted without being documented.
// Syntax: `program COMMAND --flag value` or `--flag=value`; every flag must be known, every
// value present.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gla {

struct FlagSpec {
  std::string name;   // without "--"
  std::string value;  // what the value is, in the help: "N", "TEXT", "HOST:PORT"
  std::string help;   // one line
  // Printed as "(default X)"; empty when there is none (required, or the server decides). A
  // numeric default must be the one the code passes to ParsedArgs::Int/Double, which check it.
  std::string default_value;
};

struct CommandSpec {
  std::string name;
  std::string summary;  // one line
  std::vector<FlagSpec> flags;

  const FlagSpec* Find(const std::string& flag) const;
};

struct ProgramSpec {
  std::string name;     // "gla-cli"
  std::string summary;  // one line
  std::vector<CommandSpec> commands;
  // The command when the first argument is a flag (gla-loadgen's `sweep`); empty: one is required.
  std::string default_command;

  const CommandSpec* Find(const std::string& command) const;
};

struct ParsedArgs {
  std::string command;
  std::map<std::string, std::string> flags;
  // --help (or -h) was given: print the help of `command` (empty: of the program), run nothing.
  bool help = false;
  // The command's table entry (it outlives the ParsedArgs: the ProgramSpec is main()'s).
  const CommandSpec* spec = nullptr;

  bool Has(const std::string& name) const { return flags.count(name) > 0; }
  absl::StatusOr<std::string> Required(const std::string& name) const;
  absl::StatusOr<int> Int(const std::string& name, int default_value, int min_value) const;
  // A finite number in [min_value, max_value].
  absl::StatusOr<double> Double(const std::string& name, double default_value, double min_value,
                                double max_value) const;

 private:
  // INTERNAL when the code reads a flag its table does not declare, or passes a default other
  // than the numeric one the table (and so --help) shows: a programming error the tests catch.
  absl::Status CheckDeclared(const std::string& name, const double* code_default) const;
};

// argv[1] is the command (or a flag, when the program has a default command). INVALID_ARGUMENT
// for a command line that does not fit `program`.
absl::StatusOr<ParsedArgs> ParseArgs(int argc, char** argv, const ProgramSpec& program);

// "1,2,3" -> {1, 2, 3}; error on anything that is not a comma-separated list of integers.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& text);

}  // namespace gla
