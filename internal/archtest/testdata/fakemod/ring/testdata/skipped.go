package skipped

import "net"

var _ net.Conn
