#include "clients/common/connection.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace gla {

void Connection::Prepare(grpc::ClientContext& ctx, const std::string& session) const {
  if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
  if (!session.empty()) ctx.AddMetadata(kSessionHeader, session);
}

const std::vector<FlagSpec>& ConnectionFlags() {
  static const std::vector<FlagSpec> flags = {
      {"addr", "HOST:PORT", "glad's address", ""},
      {"tls", "0|1", "TLS, verifying glad's certificate against the system's roots", "0"},
      {"tls-ca", "FILE", "TLS, verifying glad's certificate against this CA file", ""},
      {"token", "TOKEN", "bearer token glad requires", "$GLA_TOKEN"},
  };
  return flags;
}

absl::StatusOr<Connection> Connect(const ParsedArgs& a) {
  auto addr = a.Required("addr");
  if (!addr.ok()) return addr.status();
  Connection c;
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::InsecureChannelCredentials();
  const bool tls = a.Has("tls-ca") || (a.Has("tls") && a.flags.at("tls") != "0");
  if (tls) {
    grpc::SslCredentialsOptions o;
    if (a.Has("tls-ca")) {
      std::ifstream in(a.flags.at("tls-ca"), std::ios::binary);
      if (!in) return absl::InvalidArgumentError(absl::StrCat("--tls-ca ", a.flags.at("tls-ca"), ": cannot read it"));
      std::stringstream ss;
      ss << in.rdbuf();
      o.pem_root_certs = ss.str();
    }
    creds = grpc::SslCredentials(o);
  }
  c.channel = grpc::CreateChannel(*addr, creds);
  if (a.Has("token")) {
    c.token = a.flags.at("token");
  } else if (const char* env = std::getenv("GLA_TOKEN"); env != nullptr) {
    c.token = env;
  }
  return c;
}

}  // namespace gla
