#include "server/credentials.h"

#include <utility>

#include <grpcpp/security/server_credentials.h>

#include "absl/strings/str_cat.h"
#include "models/file_io.h"
#include "models/status_macros.h"
#include "server/tls_files.h"

namespace gla {

namespace {

// The file's bytes; the error names the flag and the path only (never what was read).
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, const char* what) {
  auto bytes = ReadWholeFile(path);
  if (!bytes.ok()) return absl::NotFoundError(absl::StrCat(what, " ", path, ": cannot read it"));
  return bytes;
}

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> LoadServerCredentials(const TlsFiles& files) {
  const std::string& cert = files.cert;
  const std::string& key = files.key;
  const std::string& client_ca = files.client_ca;
  if (cert.empty() != key.empty()) return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  if (cert.empty()) {
    if (!client_ca.empty()) return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions o(client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                                         : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.private_key, ReadSecretFile(key, "--tls_key"));
  ASSIGN_OR_RETURN(pair.cert_chain, ReadSecretFile(cert, "--tls_cert"));
  RETURN_IF_ERROR(CheckTlsKeyPair(pair.cert_chain, cert, pair.private_key, key));
  if (!client_ca.empty()) {
    ASSIGN_OR_RETURN(o.pem_root_certs, ReadSecretFile(client_ca, "--tls_client_ca"));
    RETURN_IF_ERROR(CheckCaBundle(o.pem_root_certs, client_ca));
  }
  o.pem_key_cert_pairs.push_back(std::move(pair));
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
