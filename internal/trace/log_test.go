package trace

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
)

func TestLogHandlerAddsTraceID(t *testing.T) {
	var b bytes.Buffer
	log := slog.New(LogHandler(slog.NewTextHandler(&b, nil))).With("node", "n1")
	ctx, id := Force(context.Background())
	log.InfoContext(ctx, "request failed")
	log.Info("no request")
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "trace_id="+id) || !strings.Contains(lines[0], "node=n1") || strings.Contains(lines[1], "trace_id") {
		t.Fatalf("log:\n%s", b.String())
	}
}
