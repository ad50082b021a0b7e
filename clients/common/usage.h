// --help text and usage errors of a client program, both from its ProgramSpec (args.h).
#pragma once

#include <optional>
#include <string>

#include "clients/common/args.h"

namespace gla {

// The program's usage line and its commands, one line each; a program with one command also
// lists that command's flags.
std::string ProgramHelp(const ProgramSpec& program);
// One command's usage line, summary and every flag with its value, description and default.
std::string CommandHelp(const ProgramSpec& program, const CommandSpec& command);

// Parses argv for main(). Returns the arguments to run, or nothing with *exit_code set:
// 0 after printing the help that --help asked for (stdout); 2 after a usage error, one line on
// stderr "NAME: error: ..." that points at --help (and the program's help when there was no
// command at all). Errors of the run itself are the caller's (exit 1, by convention).
std::optional<ParsedArgs> ParseCommandLine(const ProgramSpec& program, int argc, char** argv, int* exit_code);

}  // namespace gla
