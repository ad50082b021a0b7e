// gla-cli's session commands (gla.v1.Gla sessions); their flags: commands.h.
//
//   gla-cli session-create --addr A [--id ID] [--ttl-s N]     prints the new session's id
//   gla-cli session-fork   --addr A --from ID [--id NEW] [--ttl-s N]
//   gla-cli session-delete --addr A --id ID
//   gla-cli sessions       --addr A                           one line per session
//
// A conversation then goes through `gla-cli generate --session ID --prompt TEXT`, one turn per call.
#pragma once

#include "absl/status/status.h"
#include "clients/common/args.h"

namespace gla {

// Runs one of them (a.command is one of SessionCommands(), commands.h).
absl::Status RunSessionCommand(const ParsedArgs& a);

}  // namespace gla
