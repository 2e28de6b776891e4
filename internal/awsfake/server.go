// Package awsfake is a protocol-level fake of AWS ECS and CloudWatch Logs for
// tests. It speaks the AWS JSON 1.1 wire protocol (POST / with an
// X-Amz-Target header), so the real aws-sdk-go-v2 clients talk to it over
// HTTP with their BaseEndpoint set to the fake's URL.
//
// ECS tasks really run: RunTask starts the task's essential container on a
// local Docker Engine, and its output goes, while it runs, to the task's
// CloudWatch Logs stream in the fake's log store. Faults (throttling, stuck
// tasks, RunTask failures, failed pulls, Logs outages) can be injected and
// changed while the fake runs.
//
// A Server is an http.Handler; wrap it in an httptest.Server:
//
//	fake := awsfake.New(awsfake.Config{Docker: cli})
//	srv := httptest.NewServer(fake)
//	defer fake.Close()
//	defer srv.Close()
package awsfake

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/moby/moby/client"
)

// LabelServer is the label on every container a Server starts; its value is
// the Server's ID. Close removes the containers by it.
const LabelServer = "dray.awsfake"

// labelTask names the task a container runs.
const labelTask = "dray.awsfake.task"

// Region and Account appear in every ARN the fake makes.
const (
	Region  = "us-east-1"
	Account = "123456789012"
)

// The X-Amz-Target prefixes of the two services.
const (
	ecsTarget  = "AmazonEC2ContainerServiceV20141113."
	logsTarget = "Logs_20140328."
)

// Config configures a Server.
type Config struct {
	// Docker is the engine that runs the tasks' containers. Required for
	// RunTask; the log and task definition calls work without it.
	Docker *client.Client
	// Logger receives the fake's diagnostics. Nil means slog.Default().
	Logger *slog.Logger
	// Images maps an image name in a task definition to a local image tag.
	// An image not in it is used as it is.
	Images map[string]string
	// Faults are the faults injected from the start; see SetFaults.
	Faults Faults
	// AccessKeys, when set, are the only access key IDs the fake accepts
	// (read from the request's SigV4 Authorization header); a call signed
	// with another is answered UnrecognizedClientException.
	AccessKeys []string
	// Subnets, when set, are the only subnets RunTask accepts (a subnet of
	// another region, say, is InvalidParameterException).
	Subnets []string
}

// Faults are the failures a Server injects. The zero value injects none.
type Faults struct {
	// ThrottleRate is the share (0 to 1) of ECS calls answered with HTTP 400
	// ThrottlingException "Rate exceeded".
	ThrottleRate float64
	// ProvisioningStuck keeps every new task in PROVISIONING until it is
	// stopped. StuckTasks does so for the tasks whose task definition family
	// or (ECS) image name is in it.
	ProvisioningStuck bool
	StuckTasks        []string
	// RunTaskFailures makes the next RunTaskFailures RunTask calls answer
	// tasks: [] and one failure with reason RunTaskFailureReason (default
	// "RESOURCE:MEMORY"); a negative value makes every call fail.
	RunTaskFailures      int
	RunTaskFailureReason string
	// PullFails lists (ECS) image names whose pull fails: their tasks stop
	// with stopCode TaskFailedToStart and a CannotPullContainerError. An
	// image the engine does not have fails the same way.
	PullFails []string
	// LogsUnavailable answers every CloudWatch Logs call with HTTP 500
	// ServiceUnavailableException. The tasks' output is still stored.
	LogsUnavailable bool
	// LostRunTaskAnswers makes the next LostRunTaskAnswers RunTask calls
	// start their tasks and then answer HTTP 500 ServerException, as if the
	// answer were lost: a client that sends the call again with the same
	// clientToken gets the tasks it started; without one it starts more.
	LostRunTaskAnswers int
	// ExpiredToken answers every call with HTTP 400 ExpiredTokenException,
	// as AWS does once a session token has expired.
	ExpiredToken bool
}

// Server is the fake. It is an http.Handler and safe for concurrent use.
type Server struct {
	id         string
	docker     *client.Client
	log        *slog.Logger
	images     map[string]string
	keys       []string
	subnets    []string
	startSlots chan struct{} // a token per task starting its container

	mu       sync.Mutex
	faults   Faults
	calls    map[string]int
	clusters map[string]*cluster          // by name
	taskDefs map[string][]*taskDef        // by family, index revision-1
	tasks    map[string]*task             // by task ARN
	tokens   map[string][]string          // task ARNs by RunTask clientToken
	order    []string                     // task ARNs in the order they were run
	groups   map[string]*logGroup         // by name
	tags     map[string]map[string]string // extra tags by resource ARN (TagResource)

	wg     sync.WaitGroup // the tasks' goroutines
	closed chan struct{}
	once   sync.Once
}

// New returns a Server configured by cfg, with a cluster named "default".
func New(cfg Config) *Server {
	s := &Server{
		id:     randomHex(8),
		docker: cfg.Docker,
		log:    cfg.Logger,
		images: cfg.Images, keys: cfg.AccessKeys, subnets: cfg.Subnets,
		faults:   cfg.Faults,
		calls:    map[string]int{},
		clusters: map[string]*cluster{}, tokens: map[string][]string{},
		taskDefs: map[string][]*taskDef{},
		tasks:    map[string]*task{},
		groups:   map[string]*logGroup{},
		tags:     map[string]map[string]string{},
		closed:   make(chan struct{}), startSlots: make(chan struct{}, startSlots),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.log = s.log.With("awsfake", s.id)
	s.clusters["default"] = newCluster("default")
	return s
}

// ID returns the Server's ID, the value of LabelServer on its containers.
func (s *Server) ID() string { return s.id }

// SetFaults replaces the faults injected from now on.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// Faults returns the faults injected now.
func (s *Server) Faults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Calls returns how many calls of action (such as "DescribeTasks" or
// "GetLogEvents") the Server received, answered with an error or not.
func (s *Server) Calls(action string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[action]
}

// Close stops every task that still runs, waits for their goroutines and
// removes the containers labelled with the Server's ID. The task records and
// logs stay readable.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.closed) })
	s.mu.Lock()
	for _, t := range s.tasks {
		t.requestStop()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return s.removeContainers()
}

// apiError is an error answer of the AWS JSON protocol.
type apiError struct {
	status int
	typ    string
	msg    string
}

func (e *apiError) Error() string { return e.typ + ": " + e.msg }

func clientErr(typ, format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typ, msg: fmt.Sprintf(format, args...)}
}

// handler answers one action: it decodes the request body itself and
// returns the value to encode as the response.
type handler func(s *Server, body []byte) (any, *apiError)

// ServeHTTP answers one AWS JSON 1.1 request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	target := r.Header.Get("X-Amz-Target")
	if r.Method != http.MethodPost {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "UnknownOperationException", msg: "POST only"})
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, clientErr("SerializationException", "read request body: %v", err))
		return
	}
	var (
		action string
		h      handler
		ok     bool
		isECS  bool
	)
	switch {
	case strings.HasPrefix(target, ecsTarget):
		action, isECS = strings.TrimPrefix(target, ecsTarget), true
		h, ok = ecsHandlers[action]
	case strings.HasPrefix(target, logsTarget):
		action = strings.TrimPrefix(target, logsTarget)
		h, ok = logsHandlers[action]
	}
	s.mu.Lock()
	s.calls[action]++
	f := s.faults
	s.mu.Unlock()
	if !ok {
		writeError(w, clientErr("UnknownOperationException", "unknown operation %q", target))
		return
	}
	switch key := accessKey(r.Header.Get("Authorization")); {
	case len(s.keys) > 0 && !slices.Contains(s.keys, key):
		writeError(w, clientErr("UnrecognizedClientException", "The security token included in the request is invalid."))
		return
	case f.ExpiredToken:
		writeError(w, clientErr("ExpiredTokenException", "The security token included in the request is expired"))
		return
	case isECS && f.ThrottleRate > 0 && mrand.Float64() < f.ThrottleRate:
		writeError(w, clientErr("ThrottlingException", "Rate exceeded"))
		return
	case !isECS && f.LogsUnavailable:
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "ServiceUnavailableException", msg: "The service is unavailable."})
		return
	}
	out, aerr := h(s, body)
	if aerr != nil {
		s.log.Debug("aws call failed", "action", action, "err", aerr)
		writeError(w, aerr)
		return
	}
	if action == "RunTask" && s.loseAnswer() {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "ServerException", msg: "Service encountered an internal error."})
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		writeError(w, &apiError{status: http.StatusInternalServerError, typ: "ServerException", msg: fmt.Sprintf("encode response: %v", err)})
		return
	}
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Requestid", randomHex(16))
	_, _ = w.Write(b)
}

func writeError(w http.ResponseWriter, e *apiError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", e.typ)
	w.WriteHeader(e.status)
	b, _ := json.Marshal(map[string]string{"__type": e.typ, "message": e.msg})
	_, _ = w.Write(b)
}

// decode decodes a request body into v. An empty body is an empty request.
func decode(body []byte, v any) *apiError {
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return clientErr("SerializationException", "decode request: %v", err)
	}
	return nil
}

// route adapts a typed action to a handler.
func route[In any](f func(s *Server, in *In) (any, *apiError)) handler {
	return func(s *Server, body []byte) (any, *apiError) {
		in := new(In)
		if err := decode(body, in); err != nil {
			return nil, err
		}
		return f(s, in)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails
	return hex.EncodeToString(b)
}

// loseAnswer reports whether to lose this RunTask's answer (a fault).
func (s *Server) loseAnswer() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.faults.LostRunTaskAnswers <= 0 {
		return false
	}
	s.faults.LostRunTaskAnswers--
	return true
}

// accessKey returns the access key ID of a SigV4 Authorization header:
// "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/ecs/aws4_request, …".
func accessKey(auth string) string {
	_, cred, ok := strings.Cut(auth, "Credential=")
	if !ok {
		return ""
	}
	key, _, _ := strings.Cut(cred, "/")
	return key
}

// FargateTaskDefinition is a task definition of family for Fargate: one
// essential container main running image, logging to logGroup with the
// stream prefix task (streams task/main/TASK-ID). Tests and the benchmark
// register it.
func FargateTaskDefinition(family, image, logGroup string) *ecs.RegisterTaskDefinitionInput {
	return &ecs.RegisterTaskDefinitionInput{
		Family: aws.String(family), NetworkMode: ecstypes.NetworkModeAwsvpc,
		RequiresCompatibilities: []ecstypes.Compatibility{ecstypes.CompatibilityFargate}, Cpu: aws.String("256"), Memory: aws.String("512"),
		ContainerDefinitions: []ecstypes.ContainerDefinition{{
			Name: aws.String("main"), Image: aws.String(image), Essential: aws.Bool(true),
			LogConfiguration: &ecstypes.LogConfiguration{LogDriver: ecstypes.LogDriverAwslogs, Options: map[string]string{
				"awslogs-group": logGroup, "awslogs-stream-prefix": "task", "awslogs-region": Region,
			}},
		}},
	}
}
