package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// repoFile is a path in the repository, from this test file's directory.
func repoFile(t *testing.T, rel string) string {
	t.Helper()
	_, self, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller")
	}
	return filepath.Join(filepath.Dir(self), "..", "..", rel)
}

// deploy/docker/compose.sh runs the Compose v2 plugin when `docker compose`
// works, else docker-compose (v1), else says neither is there; always on
// the repository's compose file and a named project. Fake docker and
// docker-compose commands record how they were called.
func TestComposeWrapperPicksTheInstalledCompose(t *testing.T) {
	script := repoFile(t, "deploy/docker/compose.sh")
	file, err := filepath.Abs(repoFile(t, "deploy/docker/compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file, _ = filepath.EvalSymlinks(file)
	run := func(v2, v1 bool, env ...string) (string, int) {
		t.Helper()
		bin := t.TempDir()
		plugin := "exit 1"
		if v2 {
			plugin = "exit 0"
		}
		fake := "#!/bin/sh\nif [ \"$1 $2\" = \"compose version\" ]; then " + plugin + "; fi\necho docker \"$@\"\n"
		if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fake), 0o755); err != nil {
			t.Fatal(err)
		}
		if v1 {
			if err := os.WriteFile(filepath.Join(bin, "docker-compose"), []byte("#!/bin/sh\necho docker-compose \"$@\"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// Only the fakes and the basic tools: no real docker on the path.
		tools := t.TempDir()
		for _, tool := range []string{"bash", "sh", "dirname"} {
			p, err := exec.LookPath(tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(p, filepath.Join(tools, tool)); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(script, "ps", "-q")
		cmd.Env = append([]string{"PATH=" + bin + ":" + tools}, env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return string(out), ee.ExitCode()
			}
			t.Fatal(err)
		}
		return strings.TrimSpace(string(out)), 0
	}
	for _, tc := range []struct {
		name   string
		v2, v1 bool
		env    []string
		want   string
		code   int
	}{
		{"v2 plugin", true, true, nil, "docker compose -f " + file + " -p capkv ps -q", 0},
		{"v1 only", false, true, nil, "docker-compose -f " + file + " -p capkv ps -q", 0},
		{"project named", false, true, []string{"CAPKV_COMPOSE_PROJECT=capkvsmoke"}, "docker-compose -f " + file + " -p capkvsmoke ps -q", 0},
		{"neither", false, false, nil, "neither 'docker compose' (the Compose v2 plugin) nor 'docker-compose' is installed", 127},
	} {
		got, code := run(tc.v2, tc.v1, tc.env...)
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("%s: exit %d, output %q; want exit %d and %q", tc.name, code, got, tc.code, tc.want)
		}
	}
}

// kvd health is the image's healthcheck: 0 with a line for a ready node,
// 1 with the reason for an address nobody serves, within --timeout.
func TestKvdHealth(t *testing.T) {
	cl := startCluster(t, 3)
	n1 := cl.procs[0]
	out, err := exec.Command(bins.kvd, "health", "--addr", n1.addr).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "ok: n1 ("+n1.addr+", region eu) serves, cluster map epoch ") {
		t.Fatalf("kvd health of a ready node: %v, %q", err, out)
	}
	t.Logf("ready: %s", strings.TrimSpace(string(out)))
	nobody := freePorts(t, 1)[0]
	start := time.Now()
	cmd := exec.Command(bins.kvd, "health", "--addr", nobody, "--timeout", "1s")
	out, err = cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), nobody+" is not ready (within --timeout 1s)") {
		t.Fatalf("kvd health of nobody: %v, %q", err, out)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("kvd health --timeout 1s took %s", took)
	}
	t.Logf("not ready: %s", strings.TrimSpace(string(out)))
}
