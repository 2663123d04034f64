package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
	"github.com/parleychat/parley/internal/testenv"
)

// TestListsPageThroughFerretDBIndexes: a server given FerretDB's PostgreSQL
// (--ferretdb-postgres-url) pages public rooms, a user's rooms and a room's
// members through ferretpg's ordered indexes once they exist (in pages of
// 2, which the store reads that way from sets over 30), and the pages put
// end to end list everything once, in id order.
func TestListsPageThroughFerretDBIndexes(t *testing.T) {
	c := newCluster(t, 1, "-ferretdb-postgres-url", testenv.FerretDBPostgresURL(t))
	srv := c.servers[0]
	eventually(t, "the server to index FerretDB's lookups", 60*time.Second, func() bool {
		b, _ := os.ReadFile(srv.log)
		return strings.Contains(string(b), "ferretpg: lookups indexed")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	owner := c.signUp(0, "pages-owner")
	var public, all []string
	for i := range 40 {
		vis := parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC
		if i%5 == 4 {
			vis = parleyv1.RoomVisibility_ROOM_VISIBILITY_PRIVATE
		}
		r, err := owner.rooms.CreateRoom(owner.ctx(ctx), &parleyv1.CreateRoomRequest{Name: "room " + strconv.Itoa(i), Visibility: vis})
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, r.Room.RoomId)
		if vis == parleyv1.RoomVisibility_ROOM_VISIBILITY_PUBLIC {
			public = append(public, r.Room.RoomId)
		}
	}
	slices.Sort(public)
	slices.Sort(all)
	members := []string{owner.id}
	for i := range 31 {
		u := c.signUp(0, "pages-member-"+strconv.Itoa(i))
		if _, err := u.rooms.JoinRoom(u.ctx(ctx), &parleyv1.JoinRoomRequest{RoomId: public[0]}); err != nil {
			t.Fatal(err)
		}
		members = append(members, u.id)
	}
	slices.Sort(members)

	listRooms := func(filter parleyv1.RoomFilter) []string {
		var ids []string
		tok := ""
		for {
			resp, err := owner.rooms.ListRooms(owner.ctx(ctx), &parleyv1.ListRoomsRequest{Filter: filter, PageSize: 2, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range resp.Rooms {
				ids = append(ids, r.RoomId)
			}
			if tok = resp.NextPageToken; tok == "" {
				return ids
			}
		}
	}
	if got := listRooms(parleyv1.RoomFilter_ROOM_FILTER_PUBLIC); !slices.Equal(got, public) {
		t.Errorf("public rooms in pages of 2 = %q, want %q", got, public)
	}
	if n := pages(t, srv.addr, "rooms"); n < 16 {
		t.Errorf("%d pages of rooms read through the Pager, want at least 16 (32 public rooms)", n)
	}
	if got := listRooms(parleyv1.RoomFilter_ROOM_FILTER_JOINED); !slices.Equal(got, all) {
		t.Errorf("the owner's rooms in pages of 2 = %q, want %q", got, all)
	}
	membersBefore := pages(t, srv.addr, "members")
	if membersBefore < 20 {
		t.Errorf("%d pages of memberships read through the Pager after listing the owner's 40 rooms, want at least 20", membersBefore)
	}
	var got []string
	tok := ""
	for {
		resp, err := owner.rooms.ListMembers(owner.ctx(ctx), &parleyv1.ListMembersRequest{RoomId: public[0], PageSize: 2, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range resp.Members {
			got = append(got, m.User.UserId)
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
	}
	if !slices.Equal(got, members) {
		t.Errorf("members in pages of 2 = %q, want %q", got, members)
	}
	if n := pages(t, srv.addr, "members") - membersBefore; n < 16 {
		t.Errorf("%d pages of a room's 32 members read through the Pager, want at least 16", n)
	}
}

// pages returns how many pages of coll the server read through its Pager
// (parley_ferretpg_query_duration_seconds), failing on any that failed.
func pages(t *testing.T, addr, coll string) int {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if regexp.MustCompile(`parley_ferretpg_query_duration_seconds_count\{[^}]*result="error"`).Match(body) {
		t.Errorf("the Pager failed:\n%s", grepLines(string(body), "parley_ferretpg_query"))
	}
	m := regexp.MustCompile(`parley_ferretpg_query_duration_seconds_count\{collection="` + coll + `",op="page",result="ok"\} (\d+)`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
