#include "clients/cli/commands.h"

#include "clients/common/connection.h"

namespace gla {
namespace {

// Sampling and request options, shared by generate and stream. A default left empty is the
// server's (the field is not sent).
std::vector<FlagSpec> RequestFlags() {
  return {
      {"prompt", "TEXT", "prompt text (the model needs a tokenizer)", ""},
      {"prompt-ids", "IDS", "prompt as comma-separated token ids, instead of --prompt", ""},
      {"max-new-tokens", "N", "tokens to generate at most", "64"},
      {"temperature", "T", "sampling temperature; 0 is greedy", "0"},
      {"top-k", "K", "sample among the K most likely tokens; 0: all", "0"},
      {"top-p", "P", "nucleus sampling: the most likely tokens up to probability P", ""},
      {"min-p", "P", "drop tokens less likely than P times the most likely one", "0"},
      {"seed", "S", "sampling seed, for a repeatable sample", ""},
      {"stop", "STRING", "end the text before STRING", ""},
      {"ignore-eos", "0|1", "keep generating past end-of-sequence", "0"},
      {"adapter", "NAME", "a loaded LoRA adapter to generate with (see `adapters`)", ""},
      {"session", "ID", "continue this session: send only the new text (see `session-create`)", ""},
      {"priority", "low|normal|high", "scheduling priority", "normal"},
      {"json-schema", "FILE", "structured output (one of these four at most): the text is JSON valid under this JSON Schema", ""},
      {"json-object", "0|1", "structured output: the text is a JSON object", "0"},
      {"regex", "PATTERN", "structured output: the whole text matches PATTERN", ""},
      {"grammar", "FILE", "structured output: the text is a sentence of this GBNF grammar (start rule root)", ""},
  };
}

const FlagSpec kTimeout = {"timeout-s", "S", "deadline of the call, in seconds", "600"};

}  // namespace

std::vector<CommandSpec> ServingCommands() {
  std::vector<FlagSpec> request = RequestFlags();
  request.push_back(kTimeout);
  return {
      {"info", "the served model: config, backend, slots", {kTimeout}},
      {"health", "grpc.health.v1 Check: exit 0 when glad is SERVING (no token needed)", {kTimeout}},
      {"tokenize", "print the token ids of --text", {{"text", "TEXT", "text to tokenize", ""}, kTimeout}},
      {"generate", "one request: print its text, token ids and usage", request},
      {"stream", "one streamed request: print the text as it arrives, then ids and usage", request},
  };
}

std::vector<CommandSpec> FineTuneCommands() {
  const FlagSpec id = {"id", "ID", "the job's id (see `jobs`)", ""};
  return {
      {"finetune",
       "create a fine-tuning job from one data source (--text-file, --ids-file or --data-file)",
       {
           {"name", "NAME", "name of the adapter (or checkpoint) the job makes", ""},
           {"text-file", "FILE", "local UTF-8 file, one document per line (sent as text)", ""},
           {"ids-file", "FILE", "local file, one document per line as comma-separated token ids", ""},
           {"data-file", "PATH", "a file glad reads from its --finetune_data_dir", ""},
           {"method", "lora|full", "LoRA adapter or full-parameter training", "lora"},
           {"rank", "R", "LoRA rank (server's default when absent)", ""},
           {"alpha", "A", "LoRA alpha (server's default when absent)", ""},
           {"targets", "LIST", "modules to adapt, comma-separated: q_proj,v_proj,...", ""},
           {"steps", "N", "training steps", ""},
           {"batch", "B", "sequences per step", ""},
           {"seq-len", "L", "tokens per sequence", ""},
           {"lr", "LR", "learning rate", ""},
           {"seed", "S", "seed of the data order and initialisation", ""},
           {"watch", "0|1", "print each step until the job ends; exit 0 only when it succeeded", "1"},
       }},
      {"job", "show one fine-tuning job", {id}},
      {"jobs", "list the fine-tuning jobs", {}},
      {"cancel", "cancel a fine-tuning job", {id}},
      {"adapters", "list the loaded adapters", {}},
      {"load-adapter",
       "load an adapter directory from glad's --adapter_dir",
       {{"name", "NAME", "name to serve it under", ""},
        {"path", "DIR", "the adapter's directory, relative to glad's --adapter_dir", ""},
        {"replace", "0|1", "replace a loaded adapter of that name", "0"}}},
      {"unload-adapter", "unload an adapter", {{"name", "NAME", "the adapter (see `adapters`)", ""}}},
  };
}

std::vector<CommandSpec> SessionCommands() {
  const FlagSpec ttl = {"ttl-s", "N", "seconds idle before glad drops the session (glad's default when absent)", ""};
  return {
      {"session-create",
       "create a session and print its id",
       {{"id", "ID", "the new session's id (glad picks one when absent)", ""}, ttl}},
      {"session-fork",
       "copy a session's state into a new session and print its id",
       {{"from", "ID", "the session to copy", ""}, {"id", "ID", "the new session's id (glad picks one when absent)", ""},
        ttl}},
      {"session-delete", "delete a session", {{"id", "ID", "the session", ""}}},
      {"sessions", "list the sessions, one line each", {}},
  };
}

ProgramSpec CliProgram() {
  ProgramSpec p{"gla-cli", "talk to a running glad (gla.v1 over gRPC)", {}, ""};
  for (auto group : {ServingCommands(), FineTuneCommands(), SessionCommands()}) {
    for (CommandSpec& c : group) {  // every command reaches glad the same way
      c.flags.insert(c.flags.begin(), ConnectionFlags().begin(), ConnectionFlags().end());
      p.commands.push_back(std::move(c));
    }
  }
  return p;
}

bool HasCommand(const std::vector<CommandSpec>& group, const std::string& name) {
  for (const CommandSpec& c : group)
    if (c.name == name) return true;
  return false;
}

}  // namespace gla
