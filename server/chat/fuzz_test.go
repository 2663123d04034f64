package chat

import (
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	parleyv1 "github.com/parleychat/parley/gen/go/parley/v1"
)

// FuzzConnectFrame decodes arbitrary bytes as a client frame and validates
// send frames: nothing may panic, and whatever validation accepts must be a
// body the store and every client can take.
func FuzzConnectFrame(f *testing.F) {
	svc := &Service{cfg: Config{MaxMessageBytes: 64}.WithDefaults()}
	for _, seed := range []*parleyv1.ConnectRequest{
		{Frame: &parleyv1.ConnectRequest_Send{Send: &parleyv1.SendMessageRequest{RoomId: "r", ClientMsgId: "c", Body: "hello"}}},
		{Frame: &parleyv1.ConnectRequest_Subscribe{Subscribe: &parleyv1.Subscribe{RoomId: "r", ResumeFrom: &parleyv1.RoomPosition{Epoch: "e", Seq: 3}}}},
		{Frame: &parleyv1.ConnectRequest_Ping{Ping: &parleyv1.Ping{Nonce: 1}}},
	} {
		b, _ := proto.Marshal(seed)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var req parleyv1.ConnectRequest
		if proto.Unmarshal(b, &req) != nil {
			return
		}
		s := req.GetSend()
		if s == nil {
			return
		}
		if err := svc.validateSend(s); err == nil {
			body := s.GetBody()
			if strings.TrimSpace(body) == "" || len(body) > 64 || !utf8.ValidString(body) || strings.ContainsRune(body, 0) {
				t.Fatalf("accepted body %q", body)
			}
			if len(s.GetClientMsgId()) > 64 || strings.ContainsAny(s.GetClientMsgId(), ":{}\x00") {
				t.Fatalf("accepted client_msg_id %q", s.GetClientMsgId())
			}
		}
	})
}
