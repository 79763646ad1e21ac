package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// procStat is what the bench reads from /proc/<pid>/stat.
type procStat struct {
	state byte
	ppid  int
	ticks float64 // utime + stime, in USER_HZ ticks
}

// parseStat parses the text of /proc/<pid>/stat. The command name (field 2)
// may hold spaces and parentheses, so fields are counted after its last ')'.
func parseStat(s string) (procStat, error) {
	end := strings.LastIndexByte(s, ')')
	if end < 0 || end+2 > len(s) {
		return procStat{}, fmt.Errorf("stat %q: no command name in parentheses", s)
	}
	f := strings.Fields(s[end+1:])
	// After the name: state ppid pgrp session tty_nr tpgid flags minflt
	// cminflt majflt cmajflt utime stime ...
	if len(f) < 13 || len(f[0]) != 1 {
		return procStat{}, fmt.Errorf("stat %q: want state, ppid ... utime, stime after the name", s)
	}
	ppid, err1 := strconv.Atoi(f[1])
	utime, err2 := strconv.ParseFloat(f[11], 64)
	stime, err3 := strconv.ParseFloat(f[12], 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return procStat{}, fmt.Errorf("stat %q: %v", s, err)
	}
	return procStat{state: f[0][0], ppid: ppid, ticks: utime + stime}, nil
}

func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	return parseStat(string(raw))
}

// processCPU samples a process's user+system CPU time over the window, in
// percent of one core; -1 when the process is not found.
func processCPU(pid string, window time.Duration) float64 {
	n, err := strconv.Atoi(pid)
	if err != nil {
		return -1
	}
	before, err := readStat(n)
	if err != nil {
		return -1
	}
	time.Sleep(window)
	after, err := readStat(n)
	if err != nil {
		return -1
	}
	const hz = 100 // USER_HZ on Linux
	return (after.ticks - before.ticks) / hz / window.Seconds() * 100
}

// parseRSS returns VmRSS in KiB from the text of /proc/<pid>/status.
func parseRSS(status string) (int, error) {
	for _, line := range strings.Split(status, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, errors.New("no VmRSS line")
}

func rssKiB(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	return parseRSS(string(raw))
}

// processTree is pid and its direct children (nginx's workers, HAProxy's
// master-worker child), from the ppid field of every process.
func processTree(pid int) []int {
	tree := []int{pid}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		n, err := strconv.Atoi(filepath.Base(d))
		if err != nil || n == pid {
			continue
		}
		if st, err := readStat(n); err == nil && st.ppid == pid && st.state != 'Z' {
			tree = append(tree, n)
		}
	}
	return tree
}

// alive: the process exists and is not a zombie waiting to be reaped.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z'
}

// stopTree ends a balancer the bench started (or left behind): SIGTERM to the
// process, which ends its workers, then SIGKILL to whatever of the tree is
// still there after grace.
func stopTree(pid int, grace time.Duration) {
	tree := processTree(pid)
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range tree {
		if alive(p) {
			syscall.Kill(p, syscall.SIGKILL)
		}
	}
}
