package main

import "testing"

func TestCheckLoopback_RefusesOtherMachines(t *testing.T) {
	tests := []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9001", true},
		{"127.1.2.3:9001", true},
		{"[::1]:9001", true},
		{"localhost:9001", true},
		{"[::ffff:127.0.0.1]:9001", true},
		{"10.0.0.5:9001", false},
		{"192.168.1.1:9001", false},
		{"0.0.0.0:9001", false},
		{"[::]:9001", false},
		{"example.com:9001", false},
		{"keygate:9001", false},
		{"127.0.0.1", false}, // no port
		{":9001", false},     // every interface
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if err := checkLoopback(tt.addr); (err == nil) != tt.ok {
				t.Errorf("checkLoopback(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
			}
		})
	}
}

func TestCheckLoopbackURL_RefusesRemoteDatabases(t *testing.T) {
	tests := []struct {
		url string
		ok  bool
	}{
		{"postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", true},
		{"postgres://postgres@localhost/postgres", true},
		{"postgres://u:secret@db.internal:5432/prod", false},
		{"postgres://u@10.1.2.3/prod", false},
		{"postgres:///postgres", false}, // default host: not checked, refused
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			err := checkLoopbackURL(tt.url)
			if (err == nil) != tt.ok {
				t.Errorf("checkLoopbackURL = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && contains(err.Error(), "secret") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
