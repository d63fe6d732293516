use super::*;

fn parse(s: &[u8]) -> Result<Envelope, EnvelopeError> {
    Envelope::parse(Bytes::copy_from_slice(s))
}

#[test]
fn items_with_and_without_length() {
    let e = parse(
        b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\",\"dsn\":\"https://k@h/1\"}\n\
          {\"type\":\"attachment\",\"length\":10,\"content_type\":\"text/plain\",\"filename\":\"a.txt\"}\n\
          \xef\xbb\xbfHello\r\n\n\
          {\"type\":\"event\",\"filename\":\"application.log\"}\n\
          {\"message\":\"hello\"}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        e.headers.event_id.as_deref(),
        Some("9ec79c33ec9942ab8353589fcb2e04dc")
    );
    assert_eq!(e.headers.dsn.as_deref(), Some("https://k@h/1"));
    assert_eq!(e.items.len(), 2);
    assert_eq!(e.items[0].ty, ItemType::Attachment);
    assert_eq!(&e.items[0].payload[..], b"\xef\xbb\xbfHello\r\n");
    assert_eq!(e.items[0].filename.as_deref(), Some("a.txt"));
    assert_eq!(e.items[1].ty, ItemType::Event);
    assert_eq!(&e.items[1].payload[..], b"{\"message\":\"hello\"}");
}

#[test]
fn last_payload_may_end_the_body_and_empty_payloads_are_items() {
    let e = parse(b"{}\n{\"type\":\"session\"}\n\n{\"type\":\"attachment\",\"length\":0}\n\n{\"type\":\"event\"}\n{\"a\":1}")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(e.items.len(), 3);
    assert_eq!(e.items[0].ty, ItemType::Other("session".into()));
    assert!(e.items[0].payload.is_empty());
    assert!(e.items[1].payload.is_empty());
    assert_eq!(&e.items[2].payload[..], b"{\"a\":1}");
}

#[test]
fn headers_only_is_an_envelope_without_items() {
    let e = parse(b"{\"event_id\":\"9ec79c33ec9942ab8353589fcb2e04dc\"}\n\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(e.items.is_empty());
    let e = parse(b"{}").unwrap_or_else(|e| panic!("{e}"));
    assert!(e.items.is_empty());
}

#[test]
fn malformed_envelopes_are_refused_with_a_reason() {
    assert_eq!(parse(b"").err(), Some(EnvelopeError::Empty));
    assert_eq!(parse(b"  \n").err(), Some(EnvelopeError::Empty));
    assert!(matches!(
        parse(b"not json\n").err(),
        Some(EnvelopeError::InvalidHeader(_))
    ));
    assert!(matches!(
        parse(b"[1,2]\n").err(),
        Some(EnvelopeError::InvalidHeader(_))
    ));
    assert!(matches!(
        parse(b"{}\n{\"length\":3}\nabc").err(),
        Some(EnvelopeError::InvalidItemHeader { .. })
    ));
    assert!(matches!(
        parse(b"{}\n{\"type\":\"event\",\"length\":30}\n{}").err(),
        Some(EnvelopeError::UnexpectedEof { length: 30, .. })
    ));
    assert!(matches!(
        parse(b"{}\n{\"type\":\"attachment\",\"length\":2}\nabc\n").err(),
        Some(EnvelopeError::MissingNewline(_))
    ));
    assert!(matches!(
        parse(b"{} x\n").err(),
        Some(EnvelopeError::MissingNewline(_))
    ));
    assert!(matches!(
        parse(b"{}\n{\"type\":\"event\",\"length\":18446744073709551615}\n{}").err(),
        Some(EnvelopeError::UnexpectedEof { .. })
    ));
}
