//! TOOLPOOL_DRY_RUN, for pools and runs. One test, alone in its binary, so the
//! environment it sets is seen by nothing else.

use std::time::Duration;
use toolpool::{
    run_output, DryDefault, DryReply, DryRun, Error, ExitInfo, Pool, Protocol, Run, RunSpec,
    Stream, ToolSpec, DRY_RUN_ENV,
};

const T: Duration = Duration::from_secs(5);

#[test]
fn dry_run_environment_makes_every_pool_dry() {
    let missing = ToolSpec::new(["/nonexistent/tool-for-env-test"]);
    assert!(matches!(
        Pool::from_spec(missing.clone()),
        Err(Error::Spawn(_))
    ));

    std::env::set_var(DRY_RUN_ENV, "1");
    // A spec without dry_run gets the echo default, in every framing.
    let pool = Pool::from_spec(ToolSpec {
        count: 2,
        ..missing.clone()
    })
    .unwrap();
    assert_eq!(pool.request("hello", T).unwrap().text, "hello");
    assert!(pool.status().dry_run);
    assert_eq!(pool.spec().dry_run, Some(DryRun::echo()));
    assert_eq!(pool.limiter().unwrap().status().active_processes, 0);
    let rpc = Pool::from_spec(ToolSpec {
        protocol: Protocol::Jsonrpc,
        ..missing.clone()
    })
    .unwrap();
    let r = rpc.request(r#"{"method":"m","params":[1,"two"]}"#, T);
    assert_eq!(r.unwrap().text, r#"[1,"two"]"#);
    // A spec's own dry_run keeps its replies.
    let own = Pool::from_spec(ToolSpec {
        dry_run: Some(DryRun {
            replies: vec![DryReply {
                matches: "q".into(),
                reply: Some("canned".into()),
                delay_ms: 0,
                error: None,
            }],
            default: DryDefault::Reply("other".into()),
        }),
        ..missing.clone()
    })
    .unwrap();
    assert_eq!(own.request("q", T).unwrap().text, "canned");
    assert_eq!(own.request("z", T).unwrap().text, "other");
    // Dry wins over TOOLPOOL_DISABLE: no one-shot process either.
    std::env::set_var("TOOLPOOL_DISABLE", "1");
    let both = Pool::from_spec(missing.clone()).unwrap();
    let r = both.request("x", T).unwrap();
    assert_eq!((r.text.as_str(), r.instance), ("x", Some(0)));
    std::env::remove_var("TOOLPOOL_DISABLE");

    // Runs too: a spec without dry_run ends at once, with no output, no process.
    let run_spec = RunSpec::new(["/nonexistent/build-tool"]);
    let run = Run::start(run_spec.clone()).unwrap();
    assert_eq!(run.pid(), None);
    assert_eq!(run.read_line(Stream::Stdout, T).unwrap(), None);
    assert_eq!(run.wait(T).unwrap(), ExitInfo::Code(0));
    let out = run_output(run_spec.clone(), T).unwrap();
    assert_eq!((out.stdout.len(), out.exit), (0, ExitInfo::Code(0)));

    // "0" (or empty) is off again.
    std::env::set_var(DRY_RUN_ENV, "0");
    assert!(matches!(Pool::from_spec(missing), Err(Error::Spawn(_))));
    assert!(matches!(Run::start(run_spec), Err(Error::Spawn(_))));
    std::env::remove_var(DRY_RUN_ENV);
}
