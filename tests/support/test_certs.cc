#include "tests/support/test_certs.h"

#include <gtest/gtest.h>

#include "tests/support/test_util.h"

namespace gla::testing {

namespace {

// Runs an openssl command line (its output goes to the test's log when it fails).
void OpenSsl(const std::string& args) {
  const CommandResult r = RunCommand("openssl " + args);
  EXPECT_EQ(r.code, 0) << "openssl " << args << "\n" << r.out << r.err;
}

}  // namespace

const CertFiles& ServerTestCert() {
  static const CertFiles c = [] {
    const std::string dir = MakeTempDir("server-cert");
    CertFiles c{dir + "/cert.pem", dir + "/key.pem"};
    OpenSsl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost -addext "
            "'subjectAltName=IP:127.0.0.1,DNS:localhost' -keyout " + c.key + " -out " + c.cert);
    return c;
  }();
  return c;
}

const CertFiles& ClientTestCa() {
  static const CertFiles c = [] {
    const std::string dir = MakeTempDir("client-ca");
    CertFiles c{dir + "/ca.pem", dir + "/ca.key"};
    OpenSsl("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=gla-test-ca -keyout " + c.key + " -out " + c.cert);
    return c;
  }();
  return c;
}

const CertFiles& ClientTestCert() {
  static const CertFiles c = [] {
    const CertFiles& ca = ClientTestCa();
    const std::string dir = MakeTempDir("client-cert");
    CertFiles c{dir + "/client.pem", dir + "/client.key"};
    OpenSsl("req -newkey rsa:2048 -nodes -subj /CN=gla-test-client -keyout " + c.key + " -out " + dir + "/client.csr");
    OpenSsl("x509 -req -days 2 -in " + dir + "/client.csr -CA " + ca.cert + " -CAkey " + ca.key + " -CAcreateserial " +
            "-CAserial " + dir + "/ca.srl -out " + c.cert);
    return c;
  }();
  return c;
}

}  // namespace gla::testing
