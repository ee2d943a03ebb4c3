package consistency

import (
	"fmt"
	"strings"
)

// Mode is a keyspace's side of the CAP trade-off.
type Mode string

const (
	// CP keyspaces replicate each partition with Raft: linearizable, and
	// unavailable on the minority side of a network partition.
	CP Mode = "cp"
	// AP keyspaces replicate leaderlessly: always writable, convergent after heal.
	AP Mode = "ap"
)

// ParseMode accepts "cp" or "ap" (case-insensitive).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case CP, AP:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q: want cp or ap", s)
}

// Level is the consistency a single request asks for.
type Level string

const (
	// Default means "the keyspace's default level".
	Default Level = ""
	// Linearizable (cp): the read reflects every write acknowledged before it began.
	Linearizable Level = "linearizable"
	// Stale (cp): any replica answers; it may be behind and says by how much.
	Stale Level = "stale"
	// One (ap): one replica's acknowledgement is enough.
	One Level = "one"
	// Quorum (ap): a majority of the preference list must acknowledge.
	Quorum Level = "quorum"
	// All (ap): every replica of the preference list must acknowledge.
	All Level = "all"
)

var levels = []Level{Linearizable, Stale, One, Quorum, All}

// ParseLevel accepts a level name (case-insensitive); "" and "default" mean Default.
func ParseLevel(s string) (Level, error) {
	l := Level(strings.ToLower(strings.TrimSpace(s)))
	if l == "" || l == "default" {
		return Default, nil
	}
	for _, known := range levels {
		if l == known {
			return l, nil
		}
	}
	return "", fmt.Errorf("unknown consistency level %q: want one of linearizable, stale, one, quorum, all", s)
}

// DefaultLevel is the level a keyspace of mode m uses when neither the
// keyspace nor the request names one.
func (m Mode) DefaultLevel() Level {
	if m == AP {
		return Quorum
	}
	return Linearizable
}

// Supports reports whether mode m offers level l.
func (m Mode) Supports(l Level) bool {
	switch m {
	case CP:
		return l == Linearizable || l == Stale
	case AP:
		return l == One || l == Quorum || l == All
	}
	return false
}

// Resolve returns the effective level of a request: the request's own level,
// else the keyspace default, else the mode default. It fails when the result is
// not offered by the mode, naming both.
func (m Mode) Resolve(request, keyspaceDefault Level) (Level, error) {
	l := request
	if l == Default {
		l = keyspaceDefault
	}
	if l == Default {
		l = m.DefaultLevel()
	}
	if !m.Supports(l) {
		return "", fmt.Errorf("consistency level %q is not offered by %s keyspaces (%s offers %s)", l, m, m, m.offered())
	}
	return l, nil
}

func (m Mode) offered() string {
	if m == AP {
		return "one, quorum, all"
	}
	return "linearizable, stale"
}
