package bridge

import (
	"os"
	"os/exec"
	"testing"
)

// TestPythonWorker runs the worker's own unit tests (worker_test.py).
func TestPythonWorker(t *testing.T) {
	cmd := exec.Command("python3", "-m", "unittest", "-v", "worker_test.py")
	if fastPath != nil {
		cmd.Env = append(os.Environ(), "WSGIBRIDGE_FASTPATH="+fastPathObjectFile)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest worker_test.py: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
