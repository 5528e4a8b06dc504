// Package certs issues and rotates the webhook's TLS material with
// cert-manager's own API types and PKI code, so that the webhook's
// self-signed mode produces exactly what the Certificates in
// config/certmanager describe, in the layout of the Secret cert-manager
// writes (tls.crt, tls.key, ca.crt).
//
// Issue turns a cert-manager Certificate object into a key pair the way
// cert-manager's controller does (private key from spec.privateKey, a CSR,
// pki.CertificateTemplateFromCertificateRequest, then the SelfSigned or CA
// issuer's signing). SelfSigned keeps a CA and a serving certificate in one
// Secret, renews them at cert-manager's renewal time (2/3 of the lifetime by
// default), writes them into the webhook's cert dir and patches the CA into
// the MutatingWebhookConfiguration, with one writer at a time.
package certs
