// Every gla-cli command and its flags, in three groups by the file that runs them: what
// ParseArgs accepts and what `gla-cli --help` / `gla-cli COMMAND --help` print (args.h, usage.h).
#pragma once

#include <string>
#include <vector>

#include "clients/common/args.h"

namespace gla {

// info, health, tokenize, generate, stream (main.cc).
std::vector<CommandSpec> ServingCommands();
// finetune, job, jobs, cancel, adapters, load-adapter, unload-adapter (finetune_commands.h).
std::vector<CommandSpec> FineTuneCommands();
// session-create, session-fork, session-delete, sessions (session_commands.h).
std::vector<CommandSpec> SessionCommands();

// All three groups, every command with the connection flags (clients/common/connection.h).
ProgramSpec CliProgram();

bool HasCommand(const std::vector<CommandSpec>& group, const std::string& name);

}  // namespace gla
