// Package certs issues and rotates the TLS material of mlplane's servers
// (the admission webhook, the custom metrics API server) with cert-manager's
// own API types and PKI code, so that their self-signed modes produce
// exactly what the Certificates in config/certmanager and
// config/custom-metrics/certmanager describe, in the layout of the Secret
// cert-manager writes (tls.crt, tls.key, ca.crt).
//
// Issue turns a cert-manager Certificate object into a key pair the way
// cert-manager's controller does (private key from spec.privateKey, a CSR,
// pki.CertificateTemplateFromCertificateRequest, then the SelfSigned or CA
// issuer's signing). SelfSigned keeps a CA and a serving certificate in one
// Secret, renews them at cert-manager's renewal time (2/3 of the lifetime by
// default), writes them into the server's cert dir and patches the CA into
// the caBundle of the object its clients trust it through (the
// MutatingWebhookConfiguration, the APIServices: a BundleTarget), with one
// writer at a time.
package certs
