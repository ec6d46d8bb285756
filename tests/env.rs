//! TOOLPOOL_DISABLE and TOOLPOOL_MAX_PROCESSES. One test, so the environment it sets is
//! seen by nothing else.

mod common;
use common::*;
use toolpool::{Limiter, Oneshot, OneshotInput, Pool, ServedBy};

#[test]
fn environment_switches() {
    // The global limiter takes its initial limit from the environment on first use.
    std::env::set_var("TOOLPOOL_MAX_PROCESSES", "2");
    assert_eq!(Limiter::global().limit(), 2);
    let pool = Pool::from_spec(tool(2, &[])).unwrap();
    assert!(!Limiter::global().status().can_start_new);
    drop(pool);
    Limiter::global().set_limit(0);

    std::env::set_var("TOOLPOOL_DISABLE", "1");
    let mut spec = tool(2, &[]);
    spec.oneshot = Some(Oneshot {
        command: vec!["cat".into()],
        input: OneshotInput::Stdin,
    });
    let pool = Pool::from_spec(spec.clone()).unwrap();
    let r = pool.request("served once", T).unwrap();
    assert_eq!(
        (r.text.as_str(), r.served_by),
        ("served once", ServedBy::Oneshot)
    );
    assert!(pool.status().disabled);
    assert_eq!(pool.health().alive, 0);
    std::env::set_var("TOOLPOOL_DISABLE", "0");
    let pool = Pool::from_spec(spec).unwrap();
    assert_eq!(pool.request("pooled", T).unwrap().served_by, ServedBy::Pool);
    std::env::remove_var("TOOLPOOL_DISABLE");
}
