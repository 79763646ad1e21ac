package ipam

import (
	"strings"
	"testing"
)

func TestParseDefaultPools(t *testing.T) {
	tests := []struct {
		in      string
		want    string // FormatDefaultPools of the result
		wantErr string
	}{
		{in: "", want: ""},
		{in: "172.17.0.0/12:16,192.168.0.0/16:20", wantErr: "172.17.0.0/12 is not a network address, use 172.16.0.0/12"},
		{in: "172.16.0.0/12:16, 192.168.0.0/16:20", want: "172.16.0.0/12:16,192.168.0.0/16:20"},
		{in: "fd00::/48:64", want: "fd00::/48:64"},
		{in: "10.0.0.0/8:24,FD00:1::/48:64", want: "10.0.0.0/8:24,fd00:1::/48:64"},
		{in: "10.0.0.0/8:8", want: "10.0.0.0/8:8"},
		{in: "10.0.0.0/8", wantErr: "no :size"},
		{in: "10.0.0.0:24", wantErr: "no /prefix"},
		{in: "10.0.0.0/8:", wantErr: `size "" must be`},
		{in: "10.0.0.0/8:x", wantErr: `size "x" must be`},
		{in: "10.0.0.0/8:4", wantErr: "from 8 (the base's) to 30"},
		{in: "10.0.0.0/8:31", wantErr: "to 30"},
		{in: "fd00::/48:127", wantErr: "to 126"},
		{in: "10.0.0.0/33:34", wantErr: "is not a subnet"},
		{in: "banana/8:16", wantErr: "is not a subnet"},
		{in: "10.0.0.0/8:16,", wantErr: "entry 2 is empty"},
		{in: "10.0.0.0/8:16,10.1.0.0/16:24", wantErr: "10.1.0.0/16 overlaps 10.0.0.0/8"},
		{in: "::ffff:10.0.0.0/104:120", wantErr: "IPv4 form"},
	}
	for _, tt := range tests {
		got, err := ParseDefaultPools(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseDefaultPools(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseDefaultPools(%q): %v", tt.in, err)
			continue
		}
		if s := FormatDefaultPools(got); s != tt.want {
			t.Errorf("ParseDefaultPools(%q) = %s, want %s", tt.in, s, tt.want)
		}
	}
}

func TestDockerDefaultPools(t *testing.T) {
	pools := DockerDefaultPools()
	s := FormatDefaultPools(pools)
	if !strings.HasPrefix(s, "172.17.0.0/16:16,172.18.0.0/16:16,") || !strings.HasSuffix(s, ",172.31.0.0/16:16,192.168.0.0/16:20") || len(pools) != 16 {
		t.Errorf("Docker defaults = %s", s)
	}
	again, err := ParseDefaultPools(s)
	if err != nil || FormatDefaultPools(again) != s {
		t.Errorf("round trip: %v %v", again, err)
	}
}
