package awsfake

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// logsHandlers are the CloudWatch Logs actions the fake answers.
var logsHandlers = map[string]handler{
	"CreateLogGroup":     route(createLogGroup),
	"CreateLogStream":    route(createLogStream),
	"DescribeLogStreams": route(describeLogStreams),
	"PutLogEvents":       route(putLogEvents),
	"GetLogEvents":       route(getLogEvents),
	"FilterLogEvents":    route(filterLogEvents),
}

// maxLogEvents is the most events GetLogEvents returns at once, as on AWS.
const maxLogEvents = 10000

type logGroup struct {
	name    string
	created int64 // ms
	streams map[string]*logStream
}

type logStream struct {
	name    string
	created int64 // ms
	events  []logEvent
}

type logEvent struct {
	Timestamp     int64  `json:"timestamp"`
	Message       string `json:"message"`
	IngestionTime int64  `json:"ingestionTime"`
}

func nowMillis() int64 { return time.Now().UnixMilli() }

func groupARN(name string) string {
	return "arn:aws:logs:" + Region + ":" + Account + ":log-group:" + name
}

// ensureStream returns the stream, creating it and its group if needed.
// Called with s.mu held.
func (s *Server) ensureStream(group, stream string) *logStream {
	g := s.groups[group]
	if g == nil {
		g = &logGroup{name: group, created: nowMillis(), streams: map[string]*logStream{}}
		s.groups[group] = g
	}
	st := g.streams[stream]
	if st == nil {
		st = &logStream{name: stream, created: nowMillis()}
		g.streams[stream] = st
	}
	return st
}

// appendLog adds one event to a stream, creating the stream if needed.
func (s *Server) appendLog(group, stream string, ts time.Time, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.ensureStream(group, stream)
	st.events = append(st.events, logEvent{Timestamp: ts.UnixMilli(), Message: msg, IngestionTime: nowMillis()})
}

// stream returns a stream or a ResourceNotFoundException. Called with s.mu held.
func (s *Server) stream(group, stream string) (*logStream, *apiError) {
	g := s.groups[group]
	if g == nil {
		return nil, clientErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	st := g.streams[stream]
	if st == nil {
		return nil, clientErr("ResourceNotFoundException", "The specified log stream does not exist.")
	}
	return st, nil
}

type createLogGroupInput struct {
	LogGroupName string `json:"logGroupName"`
}

func createLogGroup(s *Server, in *createLogGroupInput) (any, *apiError) {
	if in.LogGroupName == "" {
		return nil, clientErr("InvalidParameterException", "logGroupName is required")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.groups[in.LogGroupName] != nil {
		return nil, clientErr("ResourceAlreadyExistsException", "The specified log group already exists")
	}
	s.groups[in.LogGroupName] = &logGroup{name: in.LogGroupName, created: nowMillis(), streams: map[string]*logStream{}}
	return struct{}{}, nil
}

type createLogStreamInput struct {
	LogGroupName  string `json:"logGroupName"`
	LogStreamName string `json:"logStreamName"`
}

func createLogStream(s *Server, in *createLogStreamInput) (any, *apiError) {
	if in.LogStreamName == "" || strings.ContainsAny(in.LogStreamName, ":*") {
		return nil, clientErr("InvalidParameterException", "logStreamName %q is not valid", in.LogStreamName)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[in.LogGroupName]
	if g == nil {
		return nil, clientErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	if g.streams[in.LogStreamName] != nil {
		return nil, clientErr("ResourceAlreadyExistsException", "The specified log stream already exists")
	}
	g.streams[in.LogStreamName] = &logStream{name: in.LogStreamName, created: nowMillis()}
	return struct{}{}, nil
}

type describeLogStreamsInput struct {
	LogGroupName        string `json:"logGroupName"`
	LogStreamNamePrefix string `json:"logStreamNamePrefix"`
	OrderBy             string `json:"orderBy"`
	Descending          bool   `json:"descending"`
	Limit               int    `json:"limit"`
}

type logStreamOut struct {
	LogStreamName       string `json:"logStreamName"`
	Arn                 string `json:"arn"`
	CreationTime        int64  `json:"creationTime"`
	FirstEventTimestamp int64  `json:"firstEventTimestamp,omitempty"`
	LastEventTimestamp  int64  `json:"lastEventTimestamp,omitempty"`
	LastIngestionTime   int64  `json:"lastIngestionTime,omitempty"`
}

// describeLogStreams returns every matching stream at once (no paging).
func describeLogStreams(s *Server, in *describeLogStreamsInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[in.LogGroupName]
	if g == nil {
		return nil, clientErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	out := []logStreamOut{}
	for _, st := range g.streams {
		if !strings.HasPrefix(st.name, in.LogStreamNamePrefix) {
			continue
		}
		o := logStreamOut{LogStreamName: st.name, Arn: groupARN(g.name) + ":log-stream:" + st.name, CreationTime: st.created}
		if n := len(st.events); n > 0 {
			o.FirstEventTimestamp = st.events[0].Timestamp
			o.LastEventTimestamp = st.events[n-1].Timestamp
			o.LastIngestionTime = st.events[n-1].IngestionTime
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool {
		less := out[i].LogStreamName < out[j].LogStreamName
		if in.OrderBy == "LastEventTime" {
			less = out[i].LastEventTimestamp < out[j].LastEventTimestamp
		}
		if in.Descending {
			return !less
		}
		return less
	})
	if in.Limit > 0 && len(out) > in.Limit {
		out = out[:in.Limit]
	}
	return map[string]any{"logStreams": out}, nil
}

type putLogEventsInput struct {
	LogGroupName  string `json:"logGroupName"`
	LogStreamName string `json:"logStreamName"`
	LogEvents     []struct {
		Timestamp int64  `json:"timestamp"`
		Message   string `json:"message"`
	} `json:"logEvents"`
}

func putLogEvents(s *Server, in *putLogEventsInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.stream(in.LogGroupName, in.LogStreamName)
	if err != nil {
		return nil, err
	}
	now := nowMillis()
	for _, e := range in.LogEvents {
		st.events = append(st.events, logEvent{Timestamp: e.Timestamp, Message: e.Message, IngestionTime: now})
	}
	return map[string]any{"nextSequenceToken": strconv.Itoa(len(st.events))}, nil
}

type getLogEventsInput struct {
	LogGroupName  string `json:"logGroupName"`
	LogStreamName string `json:"logStreamName"`
	StartFromHead bool   `json:"startFromHead"`
	NextToken     string `json:"nextToken"`
	Limit         int    `json:"limit"`
	StartTime     *int64 `json:"startTime"`
	EndTime       *int64 `json:"endTime"`
}

// getLogEvents pages through a stream with tokens "f/<i>" (events from index
// i on) and "b/<i>" (events before index i). A forward token does not change
// while no new events come, so a follower can poll with it.
func getLogEvents(s *Server, in *getLogEventsInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := s.stream(in.LogGroupName, in.LogStreamName)
	if err != nil {
		return nil, err
	}
	limit := in.Limit
	if limit <= 0 || limit > maxLogEvents {
		limit = maxLogEvents
	}
	// The events in the time range, as indexes into st.events.
	var idx []int
	for i, e := range st.events {
		if (in.StartTime == nil || e.Timestamp >= *in.StartTime) && (in.EndTime == nil || e.Timestamp < *in.EndTime) {
			idx = append(idx, i)
		}
	}
	var from, to int // positions in idx
	switch {
	case in.NextToken != "":
		dir, n, ok := parseToken(in.NextToken)
		if !ok {
			return nil, clientErr("InvalidParameterException", "The specified nextToken is invalid.")
		}
		pos := sort.SearchInts(idx, n) // the first event at index n or later
		if dir == 'f' {
			from, to = pos, min(pos+limit, len(idx))
		} else {
			from, to = max(pos-limit, 0), pos
		}
	case in.StartFromHead:
		from, to = 0, min(limit, len(idx))
	default:
		from, to = max(len(idx)-limit, 0), len(idx)
	}
	events := make([]logEvent, 0, to-from)
	for _, i := range idx[from:to] {
		events = append(events, st.events[i])
	}
	// Tokens name indexes into st.events, which only grows, so they stay
	// valid as events come.
	fwd, back := len(st.events), 0
	if to < len(idx) {
		fwd = idx[to]
	}
	if from < len(idx) {
		back = idx[from]
	} else if len(idx) > 0 {
		back = idx[len(idx)-1] + 1
	}
	if in.NextToken != "" && len(events) == 0 {
		// Nothing new: the same token again, as AWS does.
		if dir, n, _ := parseToken(in.NextToken); dir == 'f' {
			fwd = n
		} else {
			back = n
		}
	}
	return map[string]any{
		"events":            events,
		"nextForwardToken":  "f/" + strconv.Itoa(fwd),
		"nextBackwardToken": "b/" + strconv.Itoa(back),
	}, nil
}

func parseToken(tok string) (dir byte, n int, ok bool) {
	if len(tok) < 3 || (tok[0] != 'f' && tok[0] != 'b') || tok[1] != '/' {
		return 0, 0, false
	}
	n, err := strconv.Atoi(tok[2:])
	if err != nil || n < 0 {
		return 0, 0, false
	}
	return tok[0], n, true
}

type filterLogEventsInput struct {
	LogGroupName        string   `json:"logGroupName"`
	LogStreamNames      []string `json:"logStreamNames"`
	LogStreamNamePrefix string   `json:"logStreamNamePrefix"`
	FilterPattern       string   `json:"filterPattern"`
	StartTime           *int64   `json:"startTime"`
	EndTime             *int64   `json:"endTime"`
	Limit               int      `json:"limit"`
}

type filteredEvent struct {
	logEvent
	LogStreamName string `json:"logStreamName"`
	EventID       string `json:"eventId"`
}

// filterLogEvents returns the matching events of a group in time order, all
// at once (no paging). A filter pattern matches as a plain substring, which
// is what a quoted term means on AWS; the rest of the pattern syntax is not
// supported.
func filterLogEvents(s *Server, in *filterLogEventsInput) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[in.LogGroupName]
	if g == nil {
		return nil, clientErr("ResourceNotFoundException", "The specified log group does not exist.")
	}
	pattern := strings.Trim(in.FilterPattern, `"`)
	var out []filteredEvent
	for _, st := range g.streams {
		if len(in.LogStreamNames) > 0 && !slices.Contains(in.LogStreamNames, st.name) || !strings.HasPrefix(st.name, in.LogStreamNamePrefix) {
			continue
		}
		for i, e := range st.events {
			if (in.StartTime != nil && e.Timestamp < *in.StartTime) || (in.EndTime != nil && e.Timestamp > *in.EndTime) ||
				!strings.Contains(e.Message, pattern) {
				continue
			}
			out = append(out, filteredEvent{logEvent: e, LogStreamName: st.name, EventID: st.name + "/" + strconv.Itoa(i)})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Timestamp < out[j].Timestamp })
	if in.Limit > 0 && len(out) > in.Limit {
		out = out[:in.Limit]
	}
	if out == nil {
		out = []filteredEvent{}
	}
	return map[string]any{"events": out, "searchedLogStreams": []any{}}, nil
}
