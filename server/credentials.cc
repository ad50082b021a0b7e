#include "server/credentials.h"

#include <utility>

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"
#include "models/status_macros.h"

namespace gla {

namespace {

// The file's bytes; the error names the flag and the path only (never what was read).
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const char* what) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read it"));
  return bytes;
}

}  // namespace

absl::StatusOr<std::optional<TlsPems>> LoadTlsPems(const TlsFiles& files) {
  if (files.cert.empty() != files.key.empty())
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  if (files.cert.empty()) {
    if (!files.client_ca.empty()) return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    return std::nullopt;
  }
  TlsPems pems;
  ASSIGN_OR_RETURN(pems.private_key, ReadSecretFile(files.key, "--tls_key"));
  ASSIGN_OR_RETURN(pems.cert_chain, ReadSecretFile(files.cert, "--tls_cert"));
  RETURN_IF_ERROR(CheckTlsKeyPair(pems.cert_chain, files.cert, pems.private_key, files.key));
  if (!files.client_ca.empty()) {
    ASSIGN_OR_RETURN(pems.client_ca, ReadSecretFile(files.client_ca, "--tls_client_ca"));
    RETURN_IF_ERROR(CheckCaBundle(pems.client_ca, files.client_ca));
  }
  return pems;
}

std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const std::optional<TlsPems>& tls) {
  if (!tls.has_value()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions o(tls->client_ca.empty()
                                          ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  o.pem_root_certs = tls->client_ca;
  o.pem_key_cert_pairs.push_back({tls->private_key, tls->cert_chain});
  return grpc::SslServerCredentials(o);
}

absl::StatusOr<std::string> LoadAuthToken(std::string token, const std::string& token_file) {
  if (!token_file.empty()) {
    if (!token.empty()) return absl::InvalidArgumentError("--auth_token and --auth_token_file: give one");
    ASSIGN_OR_RETURN(token, ReadSecretFile(token_file, "--auth_token_file"));
    token = token.substr(0, token.find_first_of("\r\n"));
    // An empty secret must not turn authentication off: the operator asked for a token.
    if (token.empty())
      return absl::InvalidArgumentError(
          absl::StrCat("--auth_token_file ", token_file, ": no token on its first line"));
  }
  for (char c : token) {
    if (c <= ' ' || c > '~')
      return absl::InvalidArgumentError("the bearer token must be printable ASCII without spaces");
  }
  return token;
}

}  // namespace gla
