package nodemanager

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	raypb "github.com/gray-cluster/gray/proto/ray/raypb"
)

// Worker log files as the 2.60 core worker names them:
// worker-<worker id>-<job hex>-<pid>.out|.err (job omitted when empty).
var workerLogRe = regexp.MustCompile(`^worker-([0-9a-f]+)-(?:([0-9a-f]+)-)?(\d+)\.(out|err)$`)

// Prefix lines the Python worker writes to attribute what follows.
const (
	logPrefixActorName = ":actor_name:"
	logPrefixTaskName  = ":task_name:"
	logPrefixJobID     = ":job_id:"
)

// maxLogLinesPerFile bounds one file's lines per poll.
const maxLogLinesPerFile = 1000

type logFile struct {
	path    string
	pid     string
	isErr   bool
	pos     int64
	partial []byte
	job     string
	actor   string
	task    string
	idle    int  // polls in a row that found nothing new
	keep    bool // never finished (a job's runtime_env set-up log)
}

// finishAfterIdlePolls: a dead worker's file is dropped after this many
// polls found nothing new.
const finishAfterIdlePolls = 10

// tailLogs follows the worker .out/.err files and publishes new lines on
// RAY_LOG_CHANNEL, as stock Ray's log_monitor does, so that print() in a
// task reaches the driver.
func (r *Raylet) tailLogs() {
	dir := filepath.Join(r.cfg.SessionDir, "logs")
	files := map[string]*logFile{}
	finished := map[string]bool{} // fully read files of dead workers
	streamSetup := setupLogsToDriver()
	t := time.NewTicker(r.cfg.LogPollInterval)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		names, _ := filepath.Glob(filepath.Join(dir, "worker-*"))
		for _, p := range names {
			if _, ok := files[p]; ok || finished[p] {
				continue
			}
			m := workerLogRe.FindStringSubmatch(filepath.Base(p))
			if m == nil {
				continue
			}
			files[p] = &logFile{path: p, pid: m[3], isErr: m[4] == "err"}
		}
		if streamSetup {
			setups, _ := filepath.Glob(filepath.Join(dir, "runtime_env_setup-*.log"))
			for _, p := range setups {
				if _, ok := files[p]; ok {
					continue
				}
				if m := setupLogRe.FindStringSubmatch(filepath.Base(p)); m != nil {
					files[p] = &logFile{path: p, pid: setupLogPid, job: m[1], keep: true}
				}
			}
		}
		var batches []*raypb.LogBatch
		for p, f := range files {
			b, eof := r.readLog(f)
			batches = append(batches, b...)
			if !f.keep && f.idle >= finishAfterIdlePolls && eof && !r.pidAlive(f.pid) {
				delete(files, p)
				finished[p] = true
			}
		}
		if len(batches) == 0 {
			continue
		}
		msgs := make([]*raypb.PubMessage, 0, len(batches))
		for _, b := range batches {
			msgs = append(msgs, &raypb.PubMessage{ChannelType: raypb.ChannelType_RAY_LOG_CHANNEL, KeyId: []byte(b.JobId),
				InnerMessage: &raypb.PubMessage_LogBatchMessage{LogBatchMessage: b}})
		}
		ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
		if err := r.gcs.publish(ctx, msgs); err != nil && r.ctx.Err() == nil {
			r.log.Debug("publishing worker logs failed", "err", err)
		}
		cancel()
	}
}

func (r *Raylet) pidAlive(pid string) bool {
	n, err := strconv.Atoi(pid)
	if err != nil {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.byID {
		if w.pid == n {
			return true
		}
	}
	return false
}

// readLog reads what was appended to f since the last poll and splits it
// into batches at actor/task name changes. eof reports nothing was left.
func (r *Raylet) readLog(f *logFile) (out []*raypb.LogBatch, eof bool) {
	fh, err := os.Open(f.path)
	if err != nil {
		return nil, true
	}
	defer fh.Close()
	if st, err := fh.Stat(); err == nil && st.Size() < f.pos {
		f.pos = 0 // truncated or rotated
	}
	if _, err := fh.Seek(f.pos, io.SeekStart); err != nil {
		return nil, true
	}
	buf := make([]byte, 256<<10)
	n, _ := io.ReadFull(fh, buf)
	if n == 0 {
		f.idle++
		return nil, true
	}
	f.idle = 0
	f.pos += int64(n)
	data := append(f.partial, buf[:n]...)
	cut := bytes.LastIndexByte(data, '\n')
	if cut < 0 {
		f.partial = data
		return nil, false
	}
	f.partial = append([]byte(nil), data[cut+1:]...)
	var lines []string
	flush := func() {
		if len(lines) > 0 {
			out = append(out, &raypb.LogBatch{Ip: r.cfg.NodeIP, Pid: f.pid, JobId: f.job, IsError: f.isErr,
				Lines: lines, ActorName: f.actor, TaskName: f.task})
			lines = nil
		}
	}
	for i, raw := range strings.Split(string(data[:cut]), "\n") {
		if i >= maxLogLinesPerFile*8 {
			break
		}
		line := strings.TrimRight(raw, "\r")
		switch {
		case strings.HasPrefix(line, logPrefixActorName):
			flush()
			f.actor = strings.TrimPrefix(line, logPrefixActorName)
			f.task = ""
		case strings.HasPrefix(line, logPrefixTaskName):
			flush()
			f.task = strings.TrimPrefix(line, logPrefixTaskName)
		case strings.HasPrefix(line, logPrefixJobID):
			flush()
			f.job = strings.TrimPrefix(line, logPrefixJobID)
		default:
			lines = append(lines, line)
			if len(lines) >= maxLogLinesPerFile {
				flush()
			}
		}
	}
	flush()
	return out, n < len(buf)
}
