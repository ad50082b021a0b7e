// gla-cli: talk to a running glad.
//
//   gla-cli info     --addr HOST:PORT
//   gla-cli health   --addr HOST:PORT   (grpc.health.v1 Check: exit 0 when SERVING; no token needed)
//   gla-cli tokenize --addr HOST:PORT --text TEXT
//   gla-cli generate --addr HOST:PORT (--prompt TEXT | --prompt-ids 1,2,3) [sampling options]
//   gla-cli stream   --addr HOST:PORT (--prompt TEXT | --prompt-ids 1,2,3) [sampling options]
//   gla-cli finetune | job | cancel | adapters | load-adapter | unload-adapter  (finetune_commands.h)
//   gla-cli session-create | session-fork | session-delete | sessions  (session_commands.h)
//
// Every command's flags, with their defaults: commands.cc (`gla-cli --help`, `gla-cli COMMAND
// --help` print them). Every command also takes --tls-ca FILE (or --tls 1) and --token T (or
// GLA_TOKEN in the environment): clients/common/connection.h.
// Errors: one line on stderr; exit 2 for a command line that does not parse, 1 for the rest.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <fstream>
#include <future>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "clients/cli/commands.h"
#include "clients/cli/finetune_commands.h"
#include "clients/cli/grpc_status.h"
#include "clients/cli/session_commands.h"
#include "clients/common/args.h"
#include "clients/common/connection.h"
#include "clients/common/usage.h"
#include "gla/v1/gla.grpc.pb.h"
#include "models/status_macros.h"

namespace gla {
namespace {

absl::StatusOr<float> Float(const ParsedArgs& a, const std::string& name, float def) {
  if (!a.Has(name)) return def;
  float v;
  if (!absl::SimpleAtof(a.flags.at(name), &v)) return absl::InvalidArgumentError(absl::StrCat("--", name, " is not a number"));
  return v;
}

// A constraint file (a JSON Schema, a grammar): read whole, bounded like the server's limit.
absl::StatusOr<std::string> ReadConstraintFile(const std::string& flag, const std::string& path) {
  constexpr std::streamsize kMax = std::streamsize{1} << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  std::string text(static_cast<size_t>(kMax) + 1, '\0');
  in.read(text.data(), kMax + 1);
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": cannot read ", path));
  if (in.gcount() > kMax) return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", path, " is over 1 MiB"));
  text.resize(static_cast<size_t>(in.gcount()));
  return text;
}

absl::StatusOr<v1::GenerateRequest> BuildRequest(const ParsedArgs& a) {
  v1::GenerateRequest r;
  if (a.Has("prompt-ids")) {
    ASSIGN_OR_RETURN(auto ids, ParseIdList(a.flags.at("prompt-ids")));
    r.mutable_token_ids()->mutable_ids()->Add(ids.begin(), ids.end());
  } else {
    ASSIGN_OR_RETURN(std::string text, a.Required("prompt"));
    r.set_text(text);
  }
  ASSIGN_OR_RETURN(int max_new, a.Int("max-new-tokens", 64, 0));
  r.set_max_new_tokens(max_new);
  ASSIGN_OR_RETURN(float t, Float(a, "temperature", 0.0f));
  r.mutable_sampling()->set_temperature(t);
  ASSIGN_OR_RETURN(int k, a.Int("top-k", 0, 0));
  r.mutable_sampling()->set_top_k(k);
  if (a.Has("top-p")) {
    ASSIGN_OR_RETURN(float p, Float(a, "top-p", 1.0f));
    r.mutable_sampling()->set_top_p(p);
  }
  ASSIGN_OR_RETURN(float mp, Float(a, "min-p", 0.0f));
  r.mutable_sampling()->set_min_p(mp);
  if (a.Has("seed")) {
    uint64_t seed;
    if (!absl::SimpleAtoi(a.flags.at("seed"), &seed)) return absl::InvalidArgumentError("--seed is not an integer");
    r.mutable_sampling()->set_seed(seed);
  }
  if (a.Has("stop")) r.add_stop(a.flags.at("stop"));
  ASSIGN_OR_RETURN(int ignore_eos, a.Int("ignore-eos", 0, 0));
  r.set_ignore_eos(ignore_eos != 0);
  if (a.Has("adapter")) r.set_adapter(a.flags.at("adapter"));
  if (a.Has("session")) r.set_session(a.flags.at("session"));
  ASSIGN_OR_RETURN(int json_object, a.Int("json-object", 0, 0));
  const int constraints = a.Has("json-schema") + a.Has("regex") + a.Has("grammar") + (json_object != 0);
  if (constraints > 1) return absl::InvalidArgumentError("--json-schema, --json-object, --regex, --grammar: one at most");
  if (a.Has("json-schema")) {
    ASSIGN_OR_RETURN(std::string schema, ReadConstraintFile("json-schema", a.flags.at("json-schema")));
    r.set_json_schema(schema);
  }
  if (a.Has("grammar")) {
    ASSIGN_OR_RETURN(std::string grammar, ReadConstraintFile("grammar", a.flags.at("grammar")));
    r.set_grammar(grammar);
  }
  if (a.Has("regex")) r.set_regex(a.flags.at("regex"));
  if (json_object != 0) r.set_json_object(true);
  if (a.Has("priority")) {
    const std::string& p = a.flags.at("priority");
    if (p == "low") r.set_priority(v1::PRIORITY_LOW);
    else if (p == "high") r.set_priority(v1::PRIORITY_HIGH);
    else if (p != "normal") return absl::InvalidArgumentError("--priority must be low, normal or high");
  }
  return r;
}

const char* Reason(v1::FinishReason r) {
  switch (r) {
    case v1::FINISH_REASON_EOS: return "eos";
    case v1::FINISH_REASON_STOP: return "stop";
    case v1::FINISH_REASON_LENGTH: return "length";
    case v1::FINISH_REASON_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

void PrintUsage(const v1::Usage& u, v1::FinishReason reason) {
  std::fprintf(stderr, "finish=%s prompt_tokens=%u completion_tokens=%u ttft=%.3fs total=%.3fs", Reason(reason),
               u.prompt_tokens(), u.completion_tokens(), u.time_to_first_token_s(), u.total_time_s());
  if (u.cached_prompt_tokens() > 0) std::fprintf(stderr, " cached_prompt_tokens=%u", u.cached_prompt_tokens());
  if (u.session_tokens() > 0) std::fprintf(stderr, " session_tokens=%llu", static_cast<unsigned long long>(u.session_tokens()));
  std::fprintf(stderr, "\n");
}

absl::Status Run(const ParsedArgs& a) {
  if (HasCommand(FineTuneCommands(), a.command)) return RunFineTuneCommand(a);
  if (HasCommand(SessionCommands(), a.command)) return RunSessionCommand(a);
  ASSIGN_OR_RETURN(const Connection conn, Connect(a));
  auto stub = v1::Gla::NewStub(conn.channel);
  grpc::ClientContext ctx;
  conn.Prepare(ctx, a.Has("session") ? a.flags.at("session") : "");
  ASSIGN_OR_RETURN(int timeout_s, a.Int("timeout-s", 600, 1));
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(timeout_s));
  if (a.command == "health") {
    // grpc.health.v1.Health/Check by hand (no generated stub here): an empty request; the
    // response's field 1 is the status, SERVING = 1, i.e. the bytes 08 01.
    grpc::GenericStub generic(conn.channel);
    grpc::Slice empty(std::string(""));
    grpc::ByteBuffer request(&empty, 1), response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status st) { done.set_value(st); });
    RETURN_IF_ERROR(FromGrpc(done.get_future().get()));
    std::vector<grpc::Slice> slices;
    std::string bytes;
    if (response.Dump(&slices).ok())
      for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    if (bytes != std::string("\x08\x01", 2)) return absl::UnavailableError("health: not SERVING");
    std::printf("SERVING\n");
  } else if (a.command == "info") {
    v1::ModelInfoResponse info;
    RETURN_IF_ERROR(FromGrpc(stub->ModelInfo(&ctx, {}, &info)));
    std::printf("%s", info.DebugString().c_str());
  } else if (a.command == "tokenize") {
    ASSIGN_OR_RETURN(std::string text, a.Required("text"));
    v1::TokenizeRequest req;
    req.set_text(text);
    v1::TokenizeResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->Tokenize(&ctx, req, &resp)));
    std::printf("%s\n", absl::StrJoin(resp.token_ids(), ",").c_str());
  } else if (a.command == "generate") {
    ASSIGN_OR_RETURN(v1::GenerateRequest req, BuildRequest(a));
    v1::GenerateResponse resp;
    RETURN_IF_ERROR(FromGrpc(stub->Generate(&ctx, req, &resp)));
    std::printf("%s\nids: %s\n", resp.text().c_str(), absl::StrJoin(resp.token_ids(), ",").c_str());
    PrintUsage(resp.usage(), resp.finish_reason());
  } else {  // stream
    ASSIGN_OR_RETURN(v1::GenerateRequest req, BuildRequest(a));
    auto reader = stub->GenerateStream(&ctx, req);
    v1::GenerateStreamResponse msg;
    std::vector<int32_t> ids;
    while (reader->Read(&msg)) {
      std::fputs(msg.text().c_str(), stdout);
      std::fflush(stdout);
      ids.insert(ids.end(), msg.token_ids().begin(), msg.token_ids().end());
      if (msg.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) PrintUsage(msg.usage(), msg.finish_reason());
    }
    RETURN_IF_ERROR(FromGrpc(reader->Finish()));
    std::printf("\nids: %s\n", absl::StrJoin(ids, ",").c_str());
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace gla

int main(int argc, char** argv) {
  const gla::ProgramSpec program = gla::CliProgram();
  int exit_code = 0;
  const std::optional<gla::ParsedArgs> args = gla::ParseCommandLine(program, argc, argv, &exit_code);
  if (!args) return exit_code;
  const absl::Status st = gla::Run(*args);
  if (!st.ok()) {
    std::fprintf(stderr, "gla-cli: error: %s\n", st.ToString().c_str());
    return 1;
  }
  return 0;
}
