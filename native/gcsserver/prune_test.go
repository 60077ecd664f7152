package gcsserver

import (
	"strconv"
	"testing"
)

func TestPruneKeepsLiveAndNewest(t *testing.T) {
	var order []string
	dead := map[string]bool{}
	for i := range 30 {
		id := strconv.Itoa(i)
		order = append(order, id)
		dead[id] = i%3 != 0 // 10 live, 20 finished
	}
	var dropped []string
	got := pruneLocked(order, 5, func(id string) bool { return dead[id] }, func(id string) { dropped = append(dropped, id) })
	if len(dropped) != 15 || dropped[0] != "1" || dropped[14] != "22" {
		t.Fatalf("dropped %v", dropped)
	}
	if len(got) != 15 || got[0] != "0" || got[len(got)-1] != "29" {
		t.Fatalf("kept %v", got)
	}
	// Within the slack nothing goes.
	if again := pruneLocked(got, 5, func(id string) bool { return dead[id] }, func(string) { t.Fatal("dropped within slack") }); len(again) != 15 {
		t.Fatalf("second prune kept %d", len(again))
	}
}
