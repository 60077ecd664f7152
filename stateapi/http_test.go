package stateapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestHandlerEnvelope(t *testing.T) {
	src := Merge(
		SourceFunc(func(_ context.Context, r Resource) (Snapshot, error) {
			if r == Nodes {
				return Snapshot{Rows: []Row{{"node_id": "b", "is_head_node": true, "state": "ALIVE"}}}, nil
			}
			return Snapshot{}, nil
		}),
		SourceFunc(func(_ context.Context, r Resource) (Snapshot, error) {
			if r == Nodes {
				return Snapshot{Rows: []Row{{"node_id": "a", "is_head_node": false, "state": "ALIVE"}}}, nil
			}
			if r == Objects {
				return Snapshot{}, errors.New("store down")
			}
			return Snapshot{}, nil
		}),
	)
	srv := httptest.NewServer(Handler(src, nil))
	defer srv.Close()
	cases := []struct {
		path   string
		method string
		status int
		rows   int
	}{
		{"/api/v0/nodes?limit=10&detail=True", http.MethodGet, 200, 2},
		{"/api/v0/nodes?filter_keys=is_head_node&filter_predicates==&filter_values=True", http.MethodGet, 200, 1},
		{"/api/v0/nodes?filter_keys=labels&filter_predicates==&filter_values=x", http.MethodGet, 400, 0},
		{"/api/v0/nodes?limit=10001", http.MethodGet, 400, 0},
		{"/api/v0/tasks/summarize", http.MethodGet, 200, -1},
		{"/api/v0/nodes/summarize", http.MethodGet, 404, 0},
		{"/api/v0/nope", http.MethodGet, 404, 0},
		{"/api/v0/objects", http.MethodGet, 500, 0},
		{"/api/v0/nodes", http.MethodPost, 405, 0},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, srv.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Result bool   `json:"result"`
			Msg    string `json:"msg"`
			Data   struct {
				Result json.RawMessage `json:"result"`
			} `json:"data"`
		}
		if resp.Header.Get("Content-Type") != "application/json; charset=utf-8" {
			t.Errorf("%s: content type %q", c.path, resp.Header.Get("Content-Type"))
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatalf("%s: %v", c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.status || body.Result != (c.status == 200) || (c.status != 200 && body.Msg == "") {
			t.Errorf("%s %s: status %d result %v msg %q", c.method, c.path, resp.StatusCode, body.Result, body.Msg)
		}
		if c.rows >= 0 && c.status == 200 {
			var l ListResponse
			if err := json.Unmarshal(body.Data.Result, &l); err != nil || len(l.Result) != c.rows {
				t.Errorf("%s: rows %v err %v", c.path, l.Result, err)
			}
		}
	}
}
