package jepsen

import (
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

func w(p int, key, v string, call, ret int64, out Outcome) Op {
	return Op{Process: p, Kind: Write, Key: key, Value: v, Call: call, Return: ret, Outcome: out}
}

func r(p int, key, v string, call, ret int64) Op {
	return Op{Process: p, Kind: Read, Key: key, Read: v, Found: v != "", Call: call, Return: ret, Outcome: OK}
}

func cas(p int, key, exp, v string, call, ret int64, out Outcome, conflict bool) Op {
	return Op{Process: p, Kind: CAS, Key: key, Expected: exp, Value: v, Call: call, Return: ret, Outcome: out, Conflict: conflict}
}

// Paired fixtures: each good history has a bad twin that differs in one
// place, so the checker is shown to accept and to reject.
func TestRegisterChecker(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  []Op
		want porcupine.CheckResult
	}{
		{"sequential", []Op{w(0, "k", "1", 0, 10, OK), r(1, "k", "1", 20, 30)}, porcupine.Ok},
		{"stale read after ack", []Op{w(0, "k", "1", 0, 10, OK), r(1, "k", "", 20, 30)}, porcupine.Illegal},
		{"concurrent read sees old", []Op{w(0, "k", "1", 0, 30, OK), r(1, "k", "", 10, 20)}, porcupine.Ok},
		{"read then older value", []Op{w(0, "k", "1", 0, 10, OK), w(0, "k", "2", 20, 30, OK), r(1, "k", "2", 40, 50), r(1, "k", "1", 60, 70)}, porcupine.Illegal},
		{"unknown write lands late", []Op{w(0, "k", "1", 0, 10, Unknown), r(1, "k", "", 20, 30), r(1, "k", "1", 40, 50)}, porcupine.Ok},
		{"unknown write cannot un-happen", []Op{w(0, "k", "1", 0, 10, Unknown), r(1, "k", "1", 20, 30), r(1, "k", "", 40, 50)}, porcupine.Illegal},
		{"failed write has no effect", []Op{w(0, "k", "1", 0, 10, Fail), r(1, "k", "", 20, 30)}, porcupine.Ok},
		{"failed write seen", []Op{w(0, "k", "1", 0, 10, Fail), w(2, "k", "2", 0, 10, OK), r(1, "k", "1", 20, 30)}, porcupine.Illegal},
		{"cas ok", []Op{w(0, "k", "1", 0, 10, OK), cas(0, "k", "1", "2", 20, 30, OK, false), r(1, "k", "2", 40, 50)}, porcupine.Ok},
		{"cas ok on wrong value", []Op{w(0, "k", "1", 0, 10, OK), cas(0, "k", "3", "2", 20, 30, OK, false)}, porcupine.Illegal},
		{"cas refused correctly", []Op{w(0, "k", "1", 0, 10, OK), cas(0, "k", "3", "2", 20, 30, Fail, true), r(1, "k", "1", 40, 50)}, porcupine.Ok},
		{"cas refused wrongly", []Op{w(0, "k", "1", 0, 10, OK), cas(0, "k", "1", "2", 20, 30, Fail, true)}, porcupine.Illegal},
		{"create if absent", []Op{cas(0, "k", "", "1", 0, 10, OK, false), r(1, "k", "1", 20, 30)}, porcupine.Ok},
		{"keys independent", []Op{w(0, "a", "1", 0, 10, OK), r(1, "b", "", 20, 30), r(1, "a", "1", 20, 30)}, porcupine.Ok},
	} {
		res := CheckRegister(tc.ops, 5*time.Second)
		if res.Result != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, res.Result, tc.want)
		}
	}
}
