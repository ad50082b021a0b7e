// gla-cli's fine-tuning commands (gla.v1.FineTune); their flags: commands.h.
//
//   gla-cli finetune --addr A --name NAME (--text-file F | --ids-file F | --data-file REL)
//                    [--method lora|full] [--rank R] [--alpha A] [--targets q_proj,v_proj,...]
//                    [--steps N] [--batch B] [--seq-len L] [--lr LR] [--seed S] [--watch 0|1]
//       --text-file: a local UTF-8 file, one document per line (sent as texts); --ids-file: one
//       document per line as comma-separated token ids; --data-file: a file the server reads from
//       its --finetune_data_dir. With --watch 1 (the default) prints each step until the job ends
//       and exits 0 only when it succeeded.
//   gla-cli job --addr A --id ID    gla-cli jobs --addr A    gla-cli cancel --addr A --id ID
//   gla-cli adapters --addr A
//   gla-cli load-adapter --addr A --name NAME --path REL [--replace 1]
//   gla-cli unload-adapter --addr A --name NAME
#pragma once

#include "absl/status/status.h"
#include "clients/common/args.h"

namespace gla {

// Runs one of them (a.command is one of FineTuneCommands(), commands.h).
absl::Status RunFineTuneCommand(const ParsedArgs& a);

}  // namespace gla
