package bridge

import (
	"bytes"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAppendHeader(t *testing.T) {
	got := appendHeader(nil, frameBody, flagBroken, 0x0102, 0x03040506)
	assert.Equal(t, []byte{'B', 1, 1, 2, 3, 4, 5, 6}, got)
	var buf [headerLen]byte
	h, err := readHeader(bytes.NewReader(got), &buf)
	require.NoError(t, err)
	assert.Equal(t, frameHeader{kind: 'B', flags: 1, id: 0x0102, size: 0x03040506}, h)
}

func TestAppendEnviron(t *testing.T) {
	tests := []struct {
		name string
		env  []Var
		want []byte
	}{
		{"empty", nil, []byte("{0")},
		{"short", []Var{{"A", "b\xe9"}}, []byte("{z\x01Az\x02b\xe90")},
		{"empty value", []Var{{"Q", ""}}, []byte("{z\x01Qz\x000")},
		{"255 bytes is short", []Var{{"L", strings.Repeat("x", 255)}}, append([]byte("{z\x01Lz\xff"), append([]byte(strings.Repeat("x", 255)), '0')...)},
		{"256 bytes is long", []Var{{"L", strings.Repeat("x", 256)}}, append([]byte("{z\x01La\x00\x01\x00\x00"), append([]byte(strings.Repeat("x", 256)), '0')...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, appendEnviron(nil, tt.env))
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		block string
		code  int
		ok    bool
	}{
		{"Status: 200 OK\r\n\r\n", 200, true},
		{"Status: 404 \r\n\r\n", 404, true},
		{"Status: 20", 0, false},
		{"Content-Type: x\r\n\r\n", 200, true},
		{"Status:200 OK\r\n\r\n", 0, false},
		{"", 0, false},
		{"Status: 099 x", 0, false},
		{"Status: abc", 0, false},
	}
	for _, tt := range tests {
		code, ok := parseStatus([]byte(tt.block))
		assert.Equal(t, tt.ok, ok, tt.block)
		assert.Equal(t, tt.code, code, tt.block)
	}
}
