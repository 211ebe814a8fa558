package main

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/omsdev/oms/pkg/config"
)

func TestDefaultsFollowTheSeedRetry(t *testing.T) {
	c, err := LoadConfig(config.FromMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Retry
	if r.InitialInterval != 5*time.Second || r.Multiplier != 2 || r.MaxAttempts != 5 || r.MaxInterval != 40*time.Second {
		t.Errorf("retry defaults = %+v, want 5s x2, 5 attempts, waits up to 40s", r)
	}
	// Waits 5+10+20+40 s with 10% jitter, plus 5 attempts of 10 s.
	if got, want := r.WorstCase(c.HandlerTimeout), 132500*time.Millisecond; got != want {
		t.Errorf("worst case = %s, want %s", got, want)
	}
	if c.Queue.VisibilityTimeout <= r.WorstCase(c.HandlerTimeout) {
		t.Errorf("default visibility timeout %s is below the retry worst case", c.Queue.VisibilityTimeout)
	}
}

// Done operations are kept 30 days by default, and at least an hour.
func TestOperationRetention(t *testing.T) {
	c, err := LoadConfig(config.FromMap(nil))
	if err != nil || c.OperationRetention != 720*time.Hour || c.OperationPurgeInterval != 10*time.Minute {
		t.Fatalf("defaults: %s every %s, %v", c.OperationRetention, c.OperationPurgeInterval, err)
	}
	c, err = LoadConfig(config.FromMap(map[string]string{"OPERATION_RETENTION": "48h", "OPERATION_PURGE_INTERVAL": "1m"}))
	if err != nil || c.OperationRetention != 48*time.Hour || c.OperationPurgeInterval != time.Minute {
		t.Errorf("set: %s every %s, %v", c.OperationRetention, c.OperationPurgeInterval, err)
	}
	for _, bad := range []map[string]string{{"OPERATION_RETENTION": "30m"}, {"OPERATION_PURGE_INTERVAL": "0s"}, {"OPERATION_RETENTION": "soon"}} {
		for k := range bad {
			if _, err := LoadConfig(config.FromMap(bad)); err == nil || !strings.Contains(err.Error(), k) {
				t.Errorf("%v: %v, want an error naming %s", bad, err, k)
			}
		}
	}
}

// The dead-letter audit runs every minute by default; 0 turns it off.
func TestDeadLetterAuditInterval(t *testing.T) {
	for env, want := range map[string]time.Duration{"": time.Minute, "0": 0, "15s": 15 * time.Second} {
		m := map[string]string{}
		if env != "" {
			m["PROCESSOR_DLQ_AUDIT_INTERVAL"] = env
		}
		if c, err := LoadConfig(config.FromMap(m)); err != nil || c.DeadLetterAuditInterval != want {
			t.Errorf("%q: %s, %v; want %s", env, c.DeadLetterAuditInterval, err, want)
		}
	}
	for _, bad := range []string{"-1s", "often", "48h"} {
		_, err := LoadConfig(config.FromMap(map[string]string{"PROCESSOR_DLQ_AUDIT_INTERVAL": bad}))
		if err == nil || !strings.Contains(err.Error(), "PROCESSOR_DLQ_AUDIT_INTERVAL") {
			t.Errorf("%q: %v, want an error naming the variable", bad, err)
		}
	}
}

func TestBadConfigNamesTheVariable(t *testing.T) {
	_, err := LoadConfig(config.FromMap(map[string]string{
		"PROCESSOR_RETRY_MULTIPLIER": "-1", "PROCESSOR_SUBSCRIPTIONS": "lots", "SQS_COMMAND_QUEUE": "plain",
	}))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, v := range []string{"PROCESSOR_RETRY_MULTIPLIER", "PROCESSOR_SUBSCRIPTIONS", "SQS_COMMAND_QUEUE"} {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error does not name %s: %v", v, err)
		}
	}
}

// A DATABASE_URL the driver cannot take is a config error in one line
// that never shows the password; LOG_LEVEL is checked.
func TestDatabaseURLAndLogLevel(t *testing.T) {
	for _, v := range []string{
		"host=db user=oms password=hunter2 dbname=oms",
		"postgres://oms:hunter2%zz@db/oms",
		"postgres://oms:hunter2@db/oms?sslmode=bogus",
	} {
		_, err := LoadConfig(config.FromMap(map[string]string{"DATABASE_URL": v, "LOG_LEVEL": "loud"}))
		if err == nil {
			t.Fatalf("%s accepted", v)
		}
		msg := err.Error()
		if strings.Contains(msg, "hunter2") || !strings.Contains(msg, "DATABASE_URL") || !strings.Contains(msg, "LOG_LEVEL") {
			t.Errorf("%s: error %q: want DATABASE_URL and LOG_LEVEL named, no password", v, msg)
		}
	}
	c, err := LoadConfig(config.FromMap(map[string]string{"HTTP_READ_TIMEOUT": "2s", "LOG_LEVEL": "debug"}))
	if err != nil || c.HTTP.ReadTimeout != 2*time.Second || c.HTTP.IdleTimeout == 0 || c.LogLevel != "debug" {
		t.Errorf("LoadConfig = %+v, %v", c.HTTP, err)
	}
}

// Many attempts or a steep multiplier used to overflow the computed waits
// into negative durations, so the visibility-timeout guard passed and
// retries ran without waiting. The arithmetic saturates instead: the worst
// case stays positive and longer than any visibility timeout (SQS allows
// 12 hours), even multiplied by the largest receive batch, so the processor
// refuses to start.
func TestRetryArithmeticSaturates(t *testing.T) {
	t.Parallel()
	for _, env := range []map[string]string{
		{"PROCESSOR_RETRY_MAX_ATTEMPTS": "40"},
		{"PROCESSOR_RETRY_MAX_ATTEMPTS": "100", "PROCESSOR_RETRY_MULTIPLIER": "10", "PROCESSOR_RETRY_INITIAL_INTERVAL": "1h",
			"PROCESSOR_RETRY_JITTER": "1", "PROCESSOR_HANDLER_TIMEOUT": "10m", "PROCESSOR_RECEIVE_BATCH": "10"},
	} {
		c, err := LoadConfig(config.FromMap(env))
		if err != nil {
			t.Fatalf("%v: %v", env, err)
		}
		if c.Retry.MaxInterval != 24*time.Hour {
			t.Errorf("%v: default max interval %s, want the 24h cap", env, c.Retry.MaxInterval)
		}
		worst := time.Duration(c.ReceiveBatch) * c.Retry.WorstCase(c.HandlerTimeout) // as main's guard computes it
		if worst < 12*time.Hour {
			t.Errorf("%v: worst case %s, want more than any visibility timeout", env, worst)
		}
	}

	// Values no configuration allows saturate too.
	r := RetryConfig{InitialInterval: time.Hour, Multiplier: 10, MaxAttempts: 1000, MaxInterval: math.MaxInt64, Jitter: 1}
	if w := r.WorstCase(math.MaxInt64 / 2); w != tooLong || 10*w <= 0 {
		t.Errorf("worst case %s, want the saturation value %s", w, tooLong)
	}
}
