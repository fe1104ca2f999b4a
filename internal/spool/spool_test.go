package spool

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatedReader hands out its data only while open is not closed.
type gatedReader struct {
	data io.Reader
	open chan struct{}
}

func (g *gatedReader) Read(p []byte) (int, error) {
	<-g.open
	return g.data.Read(p)
}

func TestSpoolKeepsReadingWhileNobodyReads(t *testing.T) {
	data := make([]byte, 5<<20+7)
	for i := range data {
		data[i] = byte(i * 31)
	}
	// The source must be drained although the reader has not started:
	// that is what unblocks Apache.
	src := bytes.NewReader(data)
	s := New(64<<10, t.TempDir())
	go s.Fill(src)
	defer s.Close()
	require.Eventually(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.err == io.EOF
	}, 10*time.Second, time.Millisecond, "the source was not read to its end")
	s.mu.Lock()
	assert.NotNil(t, s.file, "over the memory limit the spool uses a file")
	assert.LessOrEqual(t, len(s.mem), 64<<10)
	s.mu.Unlock()
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(s, 100)))
	require.NoError(t, err)
	rest, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, sha256.Sum256(data), sha256.Sum256(append(got, rest...)))
}

func TestSpoolWaitsForData(t *testing.T) {
	g := &gatedReader{data: strings.NewReader("late"), open: make(chan struct{})}
	s := New(1024, t.TempDir())
	go s.Fill(g)
	defer s.Close()
	got := make(chan string)
	go func() {
		b, _ := io.ReadAll(s)
		got <- string(b)
	}()
	select {
	case <-got:
		t.Fatal("Read returned before the source had anything")
	case <-time.After(50 * time.Millisecond):
	}
	close(g.open)
	assert.Equal(t, "late", <-got)
}

func TestSpoolPassesErrors(t *testing.T) {
	boom := errors.New("client went away")
	s := New(1024, t.TempDir())
	go s.Fill(io.MultiReader(strings.NewReader("abc"), iotest.ErrReader(boom)))
	b, err := io.ReadAll(s)
	assert.Equal(t, "abc", string(b))
	assert.ErrorIs(t, err, boom)
	require.NoError(t, s.Close())
	_, err = s.Read(make([]byte, 1))
	assert.ErrorIs(t, err, os.ErrClosed)
}

func TestSpoolFileError(t *testing.T) {
	s := New(10, "/nonexistent-dir")
	go s.Fill(strings.NewReader(strings.Repeat("x", 100)))
	_, err := io.ReadAll(s)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "spool request body")
}

func TestWriteSide(t *testing.T) {
	s := New(4, t.TempDir())
	defer s.Close()
	for _, p := range []string{"ab", "cd", "efgh", "ij"} {
		n, err := s.Write([]byte(p))
		require.NoError(t, err)
		assert.Equal(t, len(p), n)
	}
	ended, _ := s.Ended()
	assert.False(t, ended)
	s.CloseWrite(nil)
	s.CloseWrite(errors.New("ignored: the first end counts"))
	_, err := s.Write([]byte("late"))
	assert.ErrorIs(t, err, ErrEnded)
	b, err := io.ReadAll(s)
	require.NoError(t, err)
	assert.Equal(t, "abcdefghij", string(b))
	ended, err = s.Ended()
	assert.True(t, ended)
	assert.Equal(t, io.EOF, err)
}
