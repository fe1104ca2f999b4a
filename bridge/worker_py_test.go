package bridge

import (
	"os"
	"os/exec"
	"testing"
)

// TestPythonWorker runs the worker's own unit tests (wsgibridge/tests),
// with the C fast path when it is built.
func TestPythonWorker(t *testing.T) {
	cmd := exec.Command("python3", "-m", "unittest", "discover", "-v", "-s", "wsgibridge/tests", "-t", ".")
	if fastPath != nil {
		cmd.Env = append(os.Environ(), "WSGIBRIDGE_FASTPATH="+fastPathObjectFile)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python3 -m unittest discover -s wsgibridge/tests -t .: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
