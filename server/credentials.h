// What glad asks of its clients: the transport (plaintext, TLS or mutual TLS from the --tls_* PEM
// files) and the bearer token (--auth_token or --auth_token_file). Every file is read and checked
// at startup, so that a missing or mismatched one is a startup error naming it rather than a
// server that will not bind, or one that lets everyone in.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "server/tls_files.h"

namespace gla {

// Paths of the PEM files; empty: not given.
struct TlsFiles {
  std::string cert;       // --tls_cert: certificate chain
  std::string key;        // --tls_key: its private key
  std::string client_ca;  // --tls_client_ca: CA bundle that client certificates must chain to
};

// The files' contents: nullopt (plaintext) when no file is given; TLS with cert and key; mutual
// TLS when client_ca is given too. INVALID_ARGUMENT for a combination that makes no sense or a
// file that does not hold what it should (tls_files.h); NOT_FOUND for a file that cannot be read.
absl::StatusOr<std::optional<TlsPems>> LoadTlsPems(const TlsFiles& files);

// gRPC's credentials for them: insecure for nullopt; client certificates required and verified
// when client_ca is set.
std::shared_ptr<grpc::ServerCredentials> GrpcServerCredentials(const std::optional<TlsPems>& tls);

// The bearer token: `token`, or the first line of `token_file` (give one); empty: no
// authentication. INVALID_ARGUMENT for both, for a file without a token (an empty secret must not
// turn authentication off) and for a token that is not printable ASCII without spaces.
absl::StatusOr<std::string> LoadAuthToken(std::string token, const std::string& token_file);

}  // namespace gla
