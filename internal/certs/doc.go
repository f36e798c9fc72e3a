// Package certs makes and loads the TLS material of a tailor cluster.
//
// One CA signs every process's certificate; every certificate is good for
// both ends of a connection (ExtKeyUsage ServerAuth and ClientAuth), so a
// parameter server, a worker and a coordinator each load one key pair, the
// CA, and present the pair whether they dial or are dialled (mutual TLS).
// Init makes a development CA and such pairs, as `tailor certs init` does
// (pairs named as roles name their role and runs: package identity);
// Files.Load turns the three files into the tls.Config every role shares,
// which reads them again when they change (rotation without a restart).
package certs
