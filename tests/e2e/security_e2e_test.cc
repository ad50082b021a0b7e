// glad's security and limits end to end on loopback: TLS (tests/support/test_certs.h: openssl),
// the bearer token on every RPC of both services (health stays open for probes), gla-cli with
// --tls-ca and GLA_TOKEN, configuration through GLAD_* environment variables, the per-client rate
// limit and the message size limit, and the startup refusals of bad security flags.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/generic/generic_stub.h>

#include "gla/v1/gla.grpc.pb.h"
#include "tests/support/glad_process.h"
#include "tests/support/test_certs.h"
#include "tests/support/test_util.h"

namespace gla {
namespace {

using testing::GladProcess;

using testing::ReadFile;
// The self-signed certificate for 127.0.0.1 / localhost (made once per test binary).
constexpr auto TestCert = &testing::ServerTestCert;

// Exit code and stdout + stderr of a shell command line.
struct ShellResult {
  int code;
  std::string out;
};
ShellResult Shell(const std::string& cmd) {
  const testing::CommandResult r = testing::RunCommand(cmd);
  return {r.code, r.out + r.err};
}

std::string CliPath() {
  const char* env = std::getenv("GLA_CLI_PATH");
  return env != nullptr ? env : GLA_CLI_PATH;
}

std::shared_ptr<grpc::Channel> TlsChannel(const std::string& addr) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ReadFile(TestCert().cert);
  return grpc::CreateChannel(addr, grpc::SslCredentials(o));
}

grpc::StatusCode ModelInfo(const std::shared_ptr<grpc::Channel>& ch, const std::string& token) {
  auto stub = v1::Gla::NewStub(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  v1::ModelInfoResponse resp;
  return stub->ModelInfo(&ctx, {}, &resp).error_code();
}

const std::string kTiny = testing::TinyModelDir();

TEST(Security, TlsAndTokenOnEveryRpcHealthStaysOpen) {
  GladProcess glad({"--model", kTiny, "--tls_cert", TestCert().cert, "--tls_key", TestCert().key, "--auth_token",
                    "s3cret-Token"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  EXPECT_NE(glad.log().find(" tls token (backend"), std::string::npos) << glad.log();
  auto ch = TlsChannel(glad.address());
  EXPECT_EQ(ModelInfo(ch, ""), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ModelInfo(ch, "wrong"), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ModelInfo(ch, "s3cret-Token"), grpc::StatusCode::OK);
  // Plaintext to a TLS port: no connection at all.
  EXPECT_EQ(ModelInfo(grpc::CreateChannel(glad.address(), grpc::InsecureChannelCredentials()), "s3cret-Token"),
            grpc::StatusCode::UNAVAILABLE);
  // Generation and the fine-tune service: refused without the token, served with it.
  auto gla = v1::Gla::NewStub(ch);
  v1::GenerateRequest req;
  req.mutable_token_ids()->add_ids(1);
  req.mutable_token_ids()->add_ids(5);
  req.set_max_new_tokens(3);
  for (const bool with : {false, true}) {
    grpc::ClientContext ctx;
    if (with) ctx.AddMetadata("authorization", "Bearer s3cret-Token");
    v1::GenerateResponse resp;
    EXPECT_EQ(gla->Generate(&ctx, req, &resp).error_code(), with ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext sctx;
    if (with) sctx.AddMetadata("authorization", "Bearer s3cret-Token");
    auto reader = gla->GenerateStream(&sctx, req);
    v1::GenerateStreamResponse msg;
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), with ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED);
  }
  auto ft = v1::FineTune::NewStub(ch);
  for (const bool with : {false, true}) {
    grpc::ClientContext ctx;
    if (with) ctx.AddMetadata("authorization", "Bearer s3cret-Token");
    v1::ListAdaptersResponse resp;
    EXPECT_EQ(ft->ListAdapters(&ctx, {}, &resp).error_code(), with ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext cctx;
    if (with) cctx.AddMetadata("authorization", "Bearer s3cret-Token");
    v1::CreateFineTuneJobRequest creq;
    v1::FineTuneJob job;
    // With the token the request gets as far as its own validation (no adapter_dir on this server).
    EXPECT_EQ(ft->CreateFineTuneJob(&cctx, creq, &job).error_code(),
              with ? grpc::StatusCode::INVALID_ARGUMENT : grpc::StatusCode::UNAUTHENTICATED);
  }
  // Health answers without a token (load balancers and Kubernetes probes carry none): a raw
  // grpc.health.v1.Health/Check with an empty request; SERVING is the bytes 08 01.
  {
    grpc::GenericStub generic(ch);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    grpc::Slice empty(std::string(""));
    grpc::ByteBuffer request(&empty, 1), response;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status st) { done.set_value(st); });
    const grpc::Status st = done.get_future().get();
    ASSERT_TRUE(st.ok()) << st.error_message();
    std::vector<grpc::Slice> slices;
    ASSERT_TRUE(response.Dump(&slices).ok());
    std::string bytes;
    for (const auto& sl : slices) bytes.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
    EXPECT_EQ(bytes, std::string("\x08\x01", 2)) << "SERVING";
  }
  // gla-cli: --tls-ca, the token from GLA_TOKEN or --token.
  const std::string cli = CliPath() + " info --addr " + glad.address() + " --tls-ca " + TestCert().cert;
  const ShellResult no_token = Shell("env -u GLA_TOKEN " + cli);
  EXPECT_EQ(no_token.code, 1) << no_token.out;
  EXPECT_NE(no_token.out.find("UNAUTHENTICATED"), std::string::npos) << no_token.out;
  const ShellResult env_token = Shell("GLA_TOKEN=s3cret-Token " + cli);
  EXPECT_EQ(env_token.code, 0) << env_token.out;
  EXPECT_NE(env_token.out.find("backend:"), std::string::npos) << env_token.out;
  EXPECT_EQ(Shell(cli + " --token s3cret-Token").code, 0);
  // gla-cli health (Docker's HEALTHCHECK): no token needed.
  const ShellResult health = Shell("env -u GLA_TOKEN " + CliPath() + " health --addr " + glad.address() + " --tls-ca " +
                                   TestCert().cert);
  EXPECT_EQ(health.code, 0) << health.out;
  EXPECT_NE(health.out.find("SERVING"), std::string::npos) << health.out;
  // The Python client: tls_ca and token (streaming calls carry the token too).
  const std::string py = std::string("/usr/bin/python3 -c \"import sys; sys.path.insert(0, '") + GLA_SOURCE_DIR +
                         "/clients/python'); from gla_client import GlaClient; c = GlaClient('" + glad.address() +
                         "', tls_ca='" + TestCert().cert + "', token='s3cret-Token', stubs_dir='" + GLA_PY_STUBS +
                         "'); print(c.info().backend); print(len([m for m in c.stream(token_ids=[1, 5], "
                         "max_new_tokens=3)]) > 0)\"";
  const ShellResult python = Shell(py);
  EXPECT_EQ(python.code, 0) << python.out;
  EXPECT_NE(python.out.find("cpu\nTrue"), std::string::npos) << python.out;
}

// A raw call: `bytes` as the request of `method`, with an optional token.
grpc::Status RawUnary(const std::shared_ptr<grpc::Channel>& ch, const std::string& method, const std::string& bytes,
                      const std::string& token) {
  grpc::GenericStub generic(ch);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, method, grpc::StubOptions(), &request, &response,
                    [&done](grpc::Status st) { done.set_value(st); });
  return done.get_future().get();
}

// Request bytes that do not parse: INVALID_ARGUMENT naming the method once the token is right,
// UNAUTHENTICATED without it (gRPC answered UNIMPLEMENTED or INTERNAL with no message before);
// libprotobuf's own complaint goes through glad's JSON log, not around it.
TEST(Security, UnparseableRequestsAreInvalidArgumentAndTokenStillComesFirst) {
  GladProcess glad({"--model", kTiny, "--auth_token", "tok3n", "--log_format", "json"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  const std::string garbage("\xff\xff\xff\xff\x0f", 5);
  // A string field (GenerateRequest.request_id) holding invalid UTF-8: protobuf refuses the
  // message and logs an ERROR about it, once per request.
  v1::GenerateRequest with_bad_string;
  with_bad_string.set_request_id("x");
  std::string bad_utf8 = with_bad_string.SerializeAsString();
  bad_utf8.back() = '\xff';
  for (const std::string method : {"/gla.v1.Gla/Generate", "/gla.v1.Gla/Tokenize", "/gla.v1.FineTune/CreateFineTuneJob",
                                   "/gla.v1.FineTune/LoadAdapter"}) {
    const grpc::Status anon = RawUnary(glad.channel(), method, garbage, "");
    EXPECT_EQ(anon.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method << ": " << anon.error_message();
    const grpc::Status wrong = RawUnary(glad.channel(), method, garbage, "nope");
    EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED) << method << ": " << wrong.error_message();
    const grpc::Status st = RawUnary(glad.channel(), method, garbage, "tok3n");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method << ": " << st.error_message();
    EXPECT_NE(st.error_message().find(method), std::string::npos) << st.error_message();
  }
  for (int i = 0; i < 20; ++i) {
    const grpc::Status st = RawUnary(glad.channel(), "/gla.v1.Gla/Generate", bad_utf8, "tok3n");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  // The streaming method too.
  {
    grpc::GenericStub generic(glad.channel());
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer tok3n");
    grpc::CompletionQueue cq;
    auto call = generic.PrepareCall(&ctx, "/gla.v1.Gla/GenerateStream", &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    grpc::Slice slice(garbage);
    grpc::ByteBuffer request(&slice, 1);
    call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    grpc::Status st;
    call->Finish(&st, reinterpret_cast<void*>(3));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  // The token-less health check stays open, with or without good bytes.
  EXPECT_EQ(RawUnary(glad.channel(), "/grpc.health.v1.Health/Check", "", "").error_code(), grpc::StatusCode::OK);
  EXPECT_EQ(RawUnary(glad.channel(), "/grpc.health.v1.Health/Check", garbage, "").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // Every line of the log is one JSON object; protobuf's complaints, rate-limited, among them.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  const std::string log = glad.log();
  std::istringstream lines(log);
  int protobuf_lines = 0;
  for (std::string line; std::getline(lines, line);) {
    EXPECT_EQ(line.rfind("{", 0), 0u) << "not a JSON line: " << line;
    if (line.find("\"event\":\"protobuf\"") != std::string::npos) ++protobuf_lines;
  }
  EXPECT_EQ(log.find("[libprotobuf"), std::string::npos) << log;
  EXPECT_LE(protobuf_lines, 1) << "at most one protobuf line a minute\n" << log;
}

// Server reflection describes the API without a token: a server that wants one does not offer it.
TEST(Security, ReflectionIsOffWhenATokenIsRequired) {
  const std::string list_services("\x3a\x00", 2);  // ServerReflectionRequest{list_services: ""}
  for (const bool with_token : {false, true}) {
    std::vector<std::string> flags = {"--model", kTiny};
    if (with_token) flags.insert(flags.end(), {"--auth_token", "tok3n"});
    GladProcess glad(flags);
    ASSERT_TRUE(glad.ok()) << glad.log();
    grpc::GenericStub generic(glad.channel());
    for (const std::string token : {"", "tok3n"}) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
      grpc::CompletionQueue cq;
      auto call = generic.PrepareCall(&ctx, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
      void* tag;
      bool ok;
      call->StartCall(reinterpret_cast<void*>(1));
      ASSERT_TRUE(cq.Next(&tag, &ok));
      grpc::Slice slice(list_services);
      grpc::ByteBuffer request(&slice, 1), response;
      call->WriteLast(request, grpc::WriteOptions(), reinterpret_cast<void*>(2));
      ASSERT_TRUE(cq.Next(&tag, &ok));
      call->Read(&response, reinterpret_cast<void*>(3));
      ASSERT_TRUE(cq.Next(&tag, &ok));
      const bool answered = ok;
      grpc::Status st;
      call->Finish(&st, reinterpret_cast<void*>(4));
      ASSERT_TRUE(cq.Next(&tag, &ok));
      if (with_token) {
        EXPECT_FALSE(answered) << "reflection answered on a server with a token (token '" << token << "')";
        EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
      } else {
        EXPECT_TRUE(answered);
        EXPECT_TRUE(st.ok()) << st.error_message();
      }
    }
  }
}

TEST(Security, ConfiguredFromTheEnvironmentCommandLineWins) {
  setenv("GLAD_AUTH_TOKEN", "from-env", 1);
  setenv("GLAD_MAX_NEW_TOKENS", "7", 1);
  GladProcess glad({"--model", kTiny, "--max_new_tokens", "9"});
  unsetenv("GLAD_AUTH_TOKEN");
  unsetenv("GLAD_MAX_NEW_TOKENS");
  ASSERT_TRUE(glad.ok()) << glad.log();
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::UNAUTHENTICATED);
  auto stub = v1::Gla::NewStub(glad.channel());
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", "Bearer from-env");
  v1::ModelInfoResponse info;
  ASSERT_TRUE(stub->ModelInfo(&ctx, {}, &info).ok());
  EXPECT_EQ(info.limits().max_new_tokens(), 9u) << "the command line overrides GLAD_MAX_NEW_TOKENS";
  // A value the flag cannot take is a startup error naming the variable.
  const ShellResult bad = Shell("GLAD_SLOTS=many " + testing::GladPath() + " --model " + kTiny + " --listen 127.0.0.1:0");
  EXPECT_EQ(bad.code, 1) << bad.out;
  EXPECT_NE(bad.out.find("GLAD_SLOTS"), std::string::npos) << bad.out;
}

TEST(Security, RateLimitPerClientAndMessageSizeLimit) {
  GladProcess glad({"--model", kTiny, "--rate_limit", "1", "--rate_limit_burst", "2", "--max_message_mb", "1"});
  ASSERT_TRUE(glad.ok()) << glad.log();
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::OK);
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::OK);
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::RESOURCE_EXHAUSTED) << "the burst of 2 is spent";
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::OK) << "a token a second comes back";
  // A request over --max_message_mb is refused by gRPC before any handler sees it.
  std::this_thread::sleep_for(std::chrono::milliseconds(2100));
  auto stub = v1::Gla::NewStub(glad.channel());
  grpc::ClientContext ctx;
  v1::TokenizeRequest big;
  big.set_text(std::string(2 << 20, 'a'));
  v1::TokenizeResponse resp;
  EXPECT_EQ(stub->Tokenize(&ctx, big, &resp).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(ModelInfo(glad.channel(), ""), grpc::StatusCode::OK) << "and the server goes on";
}

TEST(Security, BadSecurityFlagsAreStartupErrors) {
  const std::string glad = testing::GladPath() + " --model " + kTiny + " --listen 127.0.0.1:0";
  const std::string not_pem = testing::MakeTempDir("security-bad") + "/not.pem";
  std::ofstream(not_pem) << "hello";
  const std::string dir = testing::MakeTempDir("security-bad2");
  const std::string empty = dir + "/empty", blank_first_line = dir + "/blank", other_key = dir + "/other.pem";
  std::ofstream(empty) << "";
  std::ofstream(blank_first_line) << "\nsecond-line-token\n";
  ASSERT_EQ(Shell("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out " + other_key).code, 0);
  struct Case {
    std::string flags, expect;
  };
  for (const Case& c : std::vector<Case>{
           {" --tls_cert " + TestCert().cert, "--tls_cert and --tls_key go together"},
           {" --tls_client_ca " + TestCert().cert, "--tls_client_ca needs"},
           {" --tls_cert " + not_pem + " --tls_key " + TestCert().key, "no PEM certificate"},
           {" --tls_cert /nonexistent.pem --tls_key " + TestCert().key, "/nonexistent.pem"},
           {" --auth_token 'a b'", "printable ASCII"},
           {" --auth_token x --auth_token_file " + not_pem, "give one"},
           // An empty token file must not turn authentication off.
           {" --auth_token_file " + empty, "no token on its first line"},
           {" --auth_token_file " + blank_first_line, "no token on its first line"},
           // A key that is not the certificate's is named as such (it was "cannot listen").
           {" --tls_cert " + TestCert().cert + " --tls_key " + other_key, "do not match"},
           {" --tls_cert " + TestCert().cert + " --tls_key " + TestCert().cert, "no usable PEM private key"},
           {" --tls_cert " + TestCert().cert + " --tls_key " + TestCert().key + " --tls_client_ca " + not_pem,
            "--tls_client_ca"},
           {" --max_message_mb 0", "--max_message_mb"},
           {" --rate_limit -1", "--rate_limit"},
           // The HTTP API's flags (issue 20): checked before the model is read.
           {" --http_listen nonsense", "--http_listen 'nonsense': want HOST:PORT"},
           {" --http_listen 127.0.0.1:70000", "--http_listen"},
           {" --http_threads 0", "--http_threads"},
           {" --http_max_body_mb 0", "--http_max_body_mb"},
           {" --max_n 0", "--max_n must be in [1, 128]"},
           {" --max_n 129", "--max_n must be in [1, 128]"},
           {" --http_listen 127.0.0.1:0 --chat_template /nonexistent.jinja", "--chat_template"}}) {
    const ShellResult r = Shell(glad + c.flags);
    EXPECT_EQ(r.code, 1) << c.flags << "\n" << r.out;
    EXPECT_NE(r.out.find(c.expect), std::string::npos) << c.flags << "\n" << r.out;
  }
}

}  // namespace
}  // namespace gla
