package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"time"
)

// explainTLS says why a connection to addr failed when TLS is the reason:
// the client is plaintext and the node serves TLS (or the reverse), the
// node refused the client's certificate, or the client does not trust the
// node's. It returns nil when TLS is not the problem. Like speaksHTTP1 it
// runs only after gRPC failed, whose own text would name a transport
// detail instead.
func explainTLS(ctx context.Context, addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer raw.Close()
	if deadline, ok := ctx.Deadline(); ok {
		raw.SetDeadline(deadline)
	}
	if cfg == nil {
		// Only whether it speaks TLS at all: no verification.
		err := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}).HandshakeContext(ctx)
		if err == nil || isRemoteAlert(err) {
			return fmt.Errorf("%w: the node serves TLS, and this client is plaintext: give the cluster's CA (kvctl --cacert, and --cert/--key when the cluster requires client certificates; Go client: Config.TLS)", ErrUnauthenticated)
		}
		return nil
	}
	cc := cfg.Clone()
	if cc.ServerName == "" {
		cc.ServerName, _, _ = net.SplitHostPort(addr)
	}
	cc.NextProtos = []string{"h2"}
	conn := tls.Client(raw, cc)
	err = conn.HandshakeContext(ctx)
	if err == nil {
		// In TLS 1.3 the node judges the client's certificate after the
		// client's side of the handshake ended: a refusal arrives as an
		// alert on the first read.
		conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = conn.Read(make([]byte, 1))
		if !isRemoteAlert(err) {
			return nil
		}
	}
	var rec tls.RecordHeaderError
	var unknownCA x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	switch {
	case errors.As(err, &rec):
		return fmt.Errorf("%w: the node does not serve TLS (a plaintext node?), and this client is configured for TLS", ErrUnauthenticated)
	case isRemoteAlert(err):
		return fmt.Errorf("%w: the node refused this client's certificate (%v): it needs a client certificate signed by the cluster's CA and not expired (kvctl --cert/--key)", ErrUnauthenticated, err)
	case errors.As(err, &unknownCA), errors.As(err, &host), errors.As(err, &invalid):
		return fmt.Errorf("%w: this client does not trust the node's certificate: %v (is --cacert the cluster's CA?)", ErrUnauthenticated, err)
	}
	return nil
}

// isRemoteAlert reports whether err is a TLS alert the other side sent.
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
