use super::*;

#[test]
fn a_pending_request_decides_before_the_state() {
    use Desired::*;
    assert_eq!(Desired::from_store(State::Running, None, false), Run);
    assert_eq!(Desired::from_store(State::Pausing, Some(Action::Pause), false), Pause);
    assert_eq!(Desired::from_store(State::Paused, Some(Action::Resume), false), Run);
    assert_eq!(Desired::from_store(State::Stopping, Some(Action::Stop), true), Stop { cleanup: true });
    assert_eq!(Desired::from_store(State::Stopping, Some(Action::Restart), false), LetGo);
    // Claimed after its owner died mid-request: the state alone says what to do.
    assert_eq!(Desired::from_store(State::Pausing, None, false), Pause);
    assert_eq!(Desired::from_store(State::Stopping, None, false), Stop { cleanup: false });
    assert_eq!(Desired::from_store(State::Pending, None, false), LetGo);
}
