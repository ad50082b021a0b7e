// Throwaway certificates for the TLS tests, made with the openssl CLI (deploy/install-deps.sh
// installs it) once per test binary, in its temp directory.
#pragma once

#include <string>

namespace gla::testing {

struct CertFiles {
  std::string cert, key;  // PEM files: the certificate and its private key
};

// A self-signed server certificate for 127.0.0.1 and localhost (a client trusts it by its own file).
const CertFiles& ServerTestCert();
// A CA for mutual TLS (glad's --tls_client_ca), and a client certificate it signed.
const CertFiles& ClientTestCa();
const CertFiles& ClientTestCert();

}  // namespace gla::testing
