use super::*;
use sila_sqlite::vfs::{read_file, write_all_at, write_file};

fn p(path: &str) -> &Path {
    Path::new(path)
}

fn kind<T>(result: VfsResult<T>) -> Option<VfsErrorKind> {
    result.err().map(|e| e.kind)
}

fn detail<T>(result: VfsResult<T>) -> Option<String> {
    result.err().map(|e| e.detail)
}

/// Writes `bytes` to a fresh file at `path` and syncs the file (not its directory).
fn put_synced(fs: &MemFs, path: &str, bytes: &[u8]) -> VfsResult<()> {
    let file = write_file(fs, p(path), bytes)?;
    file.sync()
}

/// A durable directory `/d` under the root.
fn fs_with_dir() -> VfsResult<MemFs> {
    let fs = MemFs::new();
    fs.create_dir(p("/d"))?;
    fs.sync_dir(p("/"))?;
    Ok(fs)
}

#[test]
fn unsynced_write_is_lost_at_crash() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"v1")?;
    fs.sync_dir(p("/d"))?;
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    write_all_at(file.as_ref(), b"v2-longer", 0)?;
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v2-longer"[..]));
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v1"[..]), "{}", fs.dump());
    Ok(())
}

#[test]
fn synced_write_survives_crash() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"v1")?;
    fs.sync_dir(p("/d"))?;
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    write_all_at(file.as_ref(), b"v2", 0)?;
    file.set_len(5)?;
    file.sync()?;
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"v2\0\0\0"[..]), "{}", fs.dump());
    Ok(())
}

#[test]
fn synced_file_without_sync_dir_of_parent_is_gone_after_crash() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"data")?;
    assert!(fs.exists(p("/d/a"))?);
    fs.crash();
    assert!(!fs.exists(p("/d/a"))?, "{}", fs.dump());
    assert!(fs.exists(p("/d"))?);
    let inodes = lock_state(&fs.inner).inodes.len();
    assert_eq!(inodes, 2, "the orphaned inode is dropped: {}", fs.dump());
    Ok(())
}

#[test]
fn rename_noreplace_refuses_an_existing_target_and_is_not_durable_until_sync_dir() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/tmp", b"new")?;
    put_synced(&fs, "/d/dest", b"theirs")?;
    fs.sync_dir(p("/d"))?;
    let refused = fs.rename_noreplace(p("/d/tmp"), p("/d/dest"));
    assert_eq!(refused.map_err(|e| e.kind), Err(VfsErrorKind::AlreadyExists));
    assert_eq!(fs.read("/d/dest").as_deref(), Some(&b"theirs"[..]));
    assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]));
    fs.rename_noreplace(p("/d/tmp"), p("/d/other"))?;
    assert_eq!(fs.read("/d/other").as_deref(), Some(&b"new"[..]));
    assert!(!fs.exists(p("/d/tmp"))?);
    fs.crash();
    assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
    assert_eq!(fs.read("/d/other"), None, "{}", fs.dump());
    Ok(())
}

#[test]
fn rename_is_not_durable_until_sync_dir() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/current", b"old")?;
    put_synced(&fs, "/d/tmp", b"")?;
    fs.sync_dir(p("/d"))?; // both names durable; tmp durably empty
    let tmp = fs.open(p("/d/tmp"), OpenMode::ReadWrite)?;
    write_all_at(tmp.as_ref(), b"new", 0)?;
    tmp.sync()?;
    fs.rename(p("/d/tmp"), p("/d/current"))?;
    assert_eq!(fs.read("/d/current").as_deref(), Some(&b"new"[..]));
    assert!(!fs.exists(p("/d/tmp"))?);
    fs.crash();
    // Old entries come back; the inode under `tmp` carries the data synced through it.
    assert_eq!(fs.read("/d/current").as_deref(), Some(&b"old"[..]), "{}", fs.dump());
    assert_eq!(fs.read("/d/tmp").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
    Ok(())
}

#[test]
fn renamed_file_crashed_back_to_old_name_keeps_its_durable_data() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"synced")?;
    fs.sync_dir(p("/d"))?;
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    write_all_at(file.as_ref(), b"unsynced", 0)?;
    fs.rename(p("/d/a"), p("/d/b"))?;
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"synced"[..]), "{}", fs.dump());
    assert_eq!(fs.read("/d/b"), None);
    Ok(())
}

#[test]
fn rename_then_sync_dir_is_durable() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/current", b"old")?;
    fs.sync_dir(p("/d"))?;
    put_synced(&fs, "/d/tmp", b"new")?;
    fs.rename(p("/d/tmp"), p("/d/current"))?;
    fs.sync_dir(p("/d"))?;
    fs.crash();
    assert_eq!(fs.read("/d/current").as_deref(), Some(&b"new"[..]), "{}", fs.dump());
    assert!(!fs.exists(p("/d/tmp"))?);
    let names: Vec<String> = fs.list_dir(p("/d"))?.into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["current".to_string()]);
    Ok(())
}

#[test]
fn unlink_is_undone_by_crash_unless_dir_synced() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"keep")?;
    put_synced(&fs, "/d/b", b"gone")?;
    fs.sync_dir(p("/d"))?;
    fs.remove_file(p("/d/a"))?;
    fs.remove_file(p("/d/b"))?;
    assert_eq!(fs.read("/d/a"), None);
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"keep"[..]), "{}", fs.dump());
    assert_eq!(fs.read("/d/b").as_deref(), Some(&b"gone"[..]));
    fs.remove_file(p("/d/b"))?;
    fs.sync_dir(p("/d"))?;
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"keep"[..]));
    assert_eq!(fs.read("/d/b"), None, "{}", fs.dump());
    Ok(())
}

#[test]
fn nested_dir_with_unsynced_entry_vanishes_with_its_contents() -> VfsResult<()> {
    let fs = MemFs::new();
    fs.create_dir(p("/a"))?;
    fs.create_dir(p("/a/b"))?;
    put_synced(&fs, "/a/b/f", b"x")?;
    fs.sync_dir(p("/a/b"))?;
    fs.sync_dir(p("/a"))?;
    // `/` itself was never synced, so `/a` is not durably linked.
    fs.crash();
    assert_eq!(fs.dirs(), BTreeSet::from([PathBuf::from("/")]), "{}", fs.dump());
    assert!(fs.files().is_empty());
    // Once the whole chain is synced it all survives.
    fs.create_dir(p("/a"))?;
    fs.create_dir(p("/a/b"))?;
    put_synced(&fs, "/a/b/f", b"x")?;
    fs.sync_dir(p("/a/b"))?;
    fs.sync_dir(p("/a"))?;
    fs.sync_dir(p("/"))?;
    fs.crash();
    assert_eq!(fs.files(), BTreeMap::from([(PathBuf::from("/a/b/f"), b"x".to_vec())]));
    Ok(())
}

#[test]
fn recreated_directory_does_not_resurrect_old_entries() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/old", b"1")?;
    fs.sync_dir(p("/d"))?;
    fs.remove_file(p("/d/old"))?;
    fs.remove_dir(p("/d"))?;
    fs.create_dir(p("/d"))?;
    fs.sync_dir(p("/"))?; // the new, empty `/d` is durable; its entries never were
    fs.crash();
    assert!(fs.exists(p("/d"))?);
    assert!(fs.list_dir(p("/d"))?.is_empty(), "{}", fs.dump());
    Ok(())
}

#[test]
fn durable_image_does_not_disturb_the_live_fs() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"durable")?;
    fs.sync_dir(p("/d"))?;
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    write_all_at(file.as_ref(), b"volatile", 0)?;
    put_synced(&fs, "/d/b", b"unlinked-in-image")?;
    let before = fs.files();
    let image = fs.durable_image();
    assert_eq!(fs.files(), before);
    assert_eq!(
        image.files(),
        BTreeMap::from([(PathBuf::from("/d/a"), b"durable".to_vec())]),
        "{}",
        image.dump()
    );
    // The live handle still works; the image is independent both ways.
    assert_eq!(file.len()?, 8);
    write_file(&image, p("/d/c"), b"only in image")?;
    assert!(!fs.exists(p("/d/c"))?);
    write_all_at(file.as_ref(), b"V", 0)?;
    assert_eq!(image.read("/d/a").as_deref(), Some(&b"durable"[..]));
    // And it equals what a real crash leaves.
    let again = fs.durable_image();
    fs.crash();
    assert_eq!(fs.files(), again.files());
    assert_eq!(fs.dirs(), again.dirs());
    Ok(())
}

#[test]
fn lie_sync_dir_makes_renames_vanish() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/current", b"old")?;
    fs.sync_dir(p("/d"))?;
    fs.set_faults(Faults { lie_sync_dir: true, ..Faults::default() });
    put_synced(&fs, "/d/tmp", b"new")?;
    fs.rename(p("/d/tmp"), p("/d/current"))?;
    fs.sync_dir(p("/d"))?;
    assert_eq!(fs.stats().dir_syncs, 3);
    fs.crash();
    assert_eq!(fs.read("/d/current").as_deref(), Some(&b"old"[..]), "{}", fs.dump());
    Ok(())
}

#[test]
fn lie_sync_loses_data() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    fs.set_faults(Faults { lie_sync: true, ..Faults::default() });
    put_synced(&fs, "/d/a", b"data")?;
    fs.sync_dir(p("/d"))?;
    fs.crash();
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b""[..]), "{}", fs.dump());
    Ok(())
}

#[test]
fn failed_sync_poisons_the_handle_and_drops_pending_data() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    fs.set_faults(Faults { fail_sync_after: Some(1), ..Faults::default() });
    let file = fs.open(p("/d/a"), OpenMode::CreateNew)?;
    write_all_at(file.as_ref(), b"first", 0)?;
    file.sync()?; // the 1st sync succeeds
    write_all_at(file.as_ref(), b"SECOND", 0)?;
    let failed = file.sync(); // the 2nd fails
    assert_eq!(
        failed.as_ref().err().map(|e| (e.kind, e.detail.as_str())),
        Some((VfsErrorKind::Other, "EIO"))
    );
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"first"[..]), "unsynced data dropped");
    let mut buf = [0u8; 8];
    assert_eq!(kind(file.read_at(&mut buf, 0)), Some(VfsErrorKind::Poisoned));
    assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Poisoned));
    assert_eq!(kind(file.set_len(0)), Some(VfsErrorKind::Poisoned));
    assert_eq!(kind(file.len()), Some(VfsErrorKind::Poisoned));
    assert_eq!(kind(file.sync()), Some(VfsErrorKind::Poisoned), "no retry-then-succeed");
    // One-shot: a fresh handle syncs again.
    let other = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    write_all_at(other.as_ref(), b"third", 0)?;
    other.sync()?;
    assert_eq!(fs.stats().syncs, 3);
    Ok(())
}

#[test]
fn capacity_refuses_growth_and_writes_nothing() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    fs.set_faults(Faults { capacity_bytes: Some(10), ..Faults::default() });
    let a = fs.open(p("/d/a"), OpenMode::CreateNew)?;
    assert_eq!(a.write_at(b"12345678", 0)?, 8);
    assert_eq!(kind(a.write_at(b"9abc", 7)), Some(VfsErrorKind::NoSpace));
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"12345678"[..]), "nothing written");
    assert_eq!(kind(a.set_len(11)), Some(VfsErrorKind::NoSpace));
    let b = fs.open(p("/d/b"), OpenMode::CreateNew)?;
    assert_eq!(kind(b.write_at(b"abc", 0)), Some(VfsErrorKind::NoSpace));
    assert_eq!(b.write_at(b"ab", 0)?, 2);
    assert_eq!(a.write_at(b"XY", 0)?, 2, "overwriting in place needs no space");
    drop(b);
    fs.remove_file(p("/d/b"))?;
    a.set_len(10)?;
    assert_eq!(fs.read("/d/a").map(|d| d.len()), Some(10));
    Ok(())
}

#[test]
fn handles_are_stale_after_crash() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"abc")?;
    fs.sync_dir(p("/d"))?;
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    fs.crash();
    let mut buf = [0u8; 3];
    assert_eq!(detail(file.read_at(&mut buf, 0)).as_deref(), Some(STALE_DETAIL));
    assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Other));
    assert_eq!(detail(file.sync()).as_deref(), Some(STALE_DETAIL));
    assert_eq!(detail(file.len()).as_deref(), Some(STALE_DETAIL));
    assert_eq!(detail(file.set_len(0)).as_deref(), Some(STALE_DETAIL));
    drop(file);
    assert_eq!(read_file(&fs, p("/d/a"))?, b"abc".to_vec());
    Ok(())
}

#[test]
fn lock_is_exclusive_until_dropped_or_crash() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let first = fs.lock_exclusive(p("/d/LOCK"))?;
    assert!(fs.exists(p("/d/LOCK"))?, "lock file is created");
    let second = fs.lock_exclusive(p("/d/LOCK"));
    let expected = format!("held by pid {}", std::process::id());
    assert_eq!(second.err().map(|e| (e.kind, e.detail)), Some((VfsErrorKind::Locked, expected)));
    drop(first);
    let again = fs.lock_exclusive(p("/d/LOCK"))?;
    fs.sync_dir(p("/d"))?;
    fs.crash();
    let after_crash = fs.lock_exclusive(p("/d/LOCK"))?;
    drop(again); // a stale guard must not release the new holder's lock
    assert_eq!(kind(fs.lock_exclusive(p("/d/LOCK"))), Some(VfsErrorKind::Locked));
    drop(after_crash);
    assert!(fs.lock_exclusive(p("/d/LOCK")).is_ok());
    Ok(())
}

#[test]
fn reads_past_eof_and_writes_past_eof_zero_fill() -> VfsResult<()> {
    let fs = MemFs::new();
    let file = fs.open(p("/f"), OpenMode::CreateOrOpen)?;
    assert_eq!(file.write_at(b"ab", 4)?, 2);
    assert_eq!(fs.read("/f").as_deref(), Some(&b"\0\0\0\0ab"[..]));
    let mut buf = [9u8; 4];
    assert_eq!(file.read_at(&mut buf, 6)?, 0);
    assert_eq!(file.read_at(&mut buf, 100)?, 0);
    assert_eq!(file.read_at(&mut buf, u64::MAX)?, 0);
    assert_eq!(file.read_at(&mut buf, 3)?, 3);
    assert_eq!(buf, [0, b'a', b'b', 9]);
    assert_eq!(kind(file.write_at(b"x", u64::MAX)), Some(VfsErrorKind::Other));
    assert_eq!(kind(file.set_len(FILE_BYTES_MAX + 1)), Some(VfsErrorKind::Other));
    file.set_len(1)?;
    assert_eq!(file.len()?, 1);
    Ok(())
}

#[test]
fn open_modes() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    assert_eq!(kind(fs.open(p("/d/a"), OpenMode::Read)), Some(VfsErrorKind::NotFound));
    assert_eq!(kind(fs.open(p("/d/a"), OpenMode::ReadWrite)), Some(VfsErrorKind::NotFound));
    assert_eq!(kind(fs.open(p("/nope/a"), OpenMode::CreateOrOpen)), Some(VfsErrorKind::NotFound));
    write_file(&fs, p("/d/a"), b"hello")?;
    assert_eq!(kind(fs.open(p("/d/a"), OpenMode::CreateNew)), Some(VfsErrorKind::AlreadyExists));
    assert_eq!(fs.open(p("/d/a"), OpenMode::CreateOrOpen)?.len()?, 5);
    let ro = fs.open(p("/d/a"), OpenMode::Read)?;
    assert_eq!(kind(ro.write_at(b"x", 0)), Some(VfsErrorKind::Other));
    assert_eq!(kind(ro.set_len(0)), Some(VfsErrorKind::Other));
    assert_eq!(fs.open(p("/d/a"), OpenMode::CreateTruncate)?.len()?, 0);
    assert_eq!(ro.len()?, 0, "same inode");
    assert_eq!(kind(fs.open(p("/d"), OpenMode::Read)), Some(VfsErrorKind::Other));
    assert_eq!(kind(fs.open(p("/"), OpenMode::Read)), Some(VfsErrorKind::Other));
    assert_eq!(kind(fs.open(p("d/a"), OpenMode::Read)), Some(VfsErrorKind::Other), "relative");
    assert_eq!(kind(fs.open(p("/d/../d/a"), OpenMode::Read)), Some(VfsErrorKind::Other));
    assert_eq!(kind(fs.open(p("/d/a/x"), OpenMode::CreateOrOpen)), Some(VfsErrorKind::Other));
    Ok(())
}

#[test]
fn namespace_operations() -> VfsResult<()> {
    let fs = MemFs::new();
    assert!(fs.exists(p("/"))?);
    assert_eq!(kind(fs.create_dir(p("/"))), Some(VfsErrorKind::AlreadyExists));
    assert_eq!(kind(fs.create_dir(p("/a/b"))), Some(VfsErrorKind::NotFound));
    fs.create_dir(p("/a"))?;
    assert_eq!(kind(fs.create_dir(p("/a"))), Some(VfsErrorKind::AlreadyExists));
    fs.create_dir(p("/a/z"))?;
    write_file(&fs, p("/a/m"), b"1")?;
    write_file(&fs, p("/a/b"), b"22")?;
    let listing = fs.list_dir(p("/a"))?;
    let expected = vec![
        DirEntry { name: "b".into(), is_dir: false },
        DirEntry { name: "m".into(), is_dir: false },
        DirEntry { name: "z".into(), is_dir: true },
    ];
    assert_eq!(listing, expected);
    assert_eq!(kind(fs.list_dir(p("/a/b"))), Some(VfsErrorKind::Other));
    assert_eq!(kind(fs.list_dir(p("/x"))), Some(VfsErrorKind::NotFound));
    assert_eq!(fs.file_len(p("/a/b"))?, Some(2));
    assert_eq!(fs.file_len(p("/a/nope"))?, None);
    assert_eq!(fs.file_len(p("/nope/nope"))?, None);
    assert_eq!(kind(fs.remove_dir(p("/a"))), Some(VfsErrorKind::Other), "not empty");
    assert_eq!(kind(fs.remove_dir(p("/a/b"))), Some(VfsErrorKind::Other), "a file");
    assert_eq!(kind(fs.remove_file(p("/a/z"))), Some(VfsErrorKind::Other), "a dir");
    assert_eq!(kind(fs.remove_file(p("/a/nope"))), Some(VfsErrorKind::NotFound));
    assert_eq!(kind(fs.rename(p("/a/z"), p("/a/y"))), Some(VfsErrorKind::Other), "dir rename");
    assert_eq!(kind(fs.rename(p("/a/b"), p("/a/z"))), Some(VfsErrorKind::Other), "onto a dir");
    assert_eq!(kind(fs.rename(p("/a/nope"), p("/a/y"))), Some(VfsErrorKind::NotFound));
    assert_eq!(kind(fs.rename(p("/a/b"), p("/q/y"))), Some(VfsErrorKind::NotFound));
    fs.rename(p("/a/b"), p("/a/m"))?;
    assert_eq!(fs.read("/a/m").as_deref(), Some(&b"22"[..]));
    fs.rename(p("/a/m"), p("/m"))?;
    assert_eq!(fs.stats().renames, 2);
    assert_eq!(fs.stats().writes, 2);
    fs.remove_dir(p("/a/z"))?;
    fs.remove_file(p("/m"))?;
    fs.remove_dir(p("/a"))?;
    assert_eq!(kind(fs.remove_dir(p("/"))), Some(VfsErrorKind::Other));
    assert_eq!(kind(fs.sync_dir(p("/a"))), Some(VfsErrorKind::NotFound));
    assert!(fs.files().is_empty());
    assert_eq!(fs.dirs().len(), 1);
    Ok(())
}

#[test]
fn unlinked_open_file_stays_usable_and_is_collected_on_close() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = write_file(&fs, p("/d/a"), b"abc")?;
    fs.remove_file(p("/d/a"))?;
    write_all_at(file.as_ref(), b"d", 3)?;
    let mut buf = [0u8; 8];
    assert_eq!(file.read_at(&mut buf, 0)?, 4);
    let inodes = || lock_state(&fs.inner).inodes.len();
    assert_eq!(inodes(), 3, "root, /d and the open inode");
    drop(file);
    assert_eq!(inodes(), 2, "{}", fs.dump());
    Ok(())
}

#[test]
fn dump_shows_pending_state() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"abc")?;
    fs.sync_dir(p("/d"))?;
    write_file(&fs, p("/d/b"), b"xy")?;
    fs.remove_file(p("/d/a"))?;
    let dump = fs.dump();
    assert!(dump.contains("d/ #"), "{dump}");
    assert!(
        dump.contains("b #")
            && dump.contains("2 bytes (dirty, durable 0 bytes, 1 pending) [entry not durable]"),
        "{dump}"
    );
    assert!(dump.contains("a #") && dump.contains("[removed; entry still durable"), "{dump}");
    Ok(())
}

#[test]
fn power_cut_freezes_the_disk_at_the_cut() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    put_synced(&fs, "/d/a", b"one")?;
    fs.sync_dir(p("/d"))?;
    // Two more mutating calls are allowed: the write and the sync of b; the sync_dir fails.
    fs.cut_power_after(2);
    let file = fs.open(p("/d/b"), OpenMode::CreateNew);
    assert!(file.is_ok(), "the create is the first call");
    fs.cut_power_after(2);
    let file = file?;
    assert!(file.write_at(b"two", 0).is_ok());
    assert!(file.sync().is_ok());
    assert_eq!(detail(fs.sync_dir(p("/d"))), Some(POWER_OFF_DETAIL.to_string()));
    assert!(fs.is_dead());
    assert_eq!(detail(fs.file_len(p("/d/a"))), Some(POWER_OFF_DETAIL.to_string()), "reads fail too");
    assert_eq!(detail(file.len()), Some(POWER_OFF_DETAIL.to_string()));
    let image = fs.durable_image();
    assert!(!image.is_dead());
    assert_eq!(image.read("/d/a"), Some(b"one".to_vec()));
    assert_eq!(image.read("/d/b"), None, "b's directory entry was never synced");
    Ok(())
}

#[test]
fn a_dirty_cut_waits_for_unsynced_changes_on_enough_files() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let a = synced_file(&fs, "a", 1, 10)?;
    let b = synced_file(&fs, "b", 2, 10)?;
    fs.cut_power_when_dirty(0, 2, 10);
    assert!(fs.power_cut_waits());
    // The countdown has run out, but no file is dirty yet: the cut waits.
    a.write_at(b"A", 0)?;
    // One file is dirty: still waiting.
    b.write_at(b"B", 0)?;
    // Two files are dirty: this call is cut.
    assert_eq!(detail(a.sync()), Some(POWER_OFF_DETAIL.to_string()));
    assert!(!fs.power_cut_waits());
    let stats = fs.stats();
    assert_eq!(stats.dirty_cuts, 1);
    let image = fs.durable_image();
    assert_eq!(image.stats().crash_images_multi_file, 1, "{:?}", image.stats());
    assert_eq!(image.stats().crash_images_unsynced, 1);
    Ok(())
}

#[test]
fn a_dirty_cut_gives_up_waiting_after_its_patience() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let a = synced_file(&fs, "a", 1, 10)?;
    // Two files are asked for, and one call of patience given: the first write waits,
    // the next call is cut although only one file is dirty.
    fs.cut_power_when_dirty(0, 2, 1);
    a.write_at(b"A", 0)?;
    assert_eq!(detail(a.sync()), Some(POWER_OFF_DETAIL.to_string()));
    assert_eq!(fs.stats().dirty_cuts, 0, "the cut did not find two dirty files");
    let image = fs.durable_image();
    assert_eq!((image.stats().crash_images_unsynced, image.stats().crash_images_multi_file), (1, 0));
    // A plain cut re-armed later does not wait.
    let fs = fs_with_dir()?;
    fs.cut_power_when_dirty(5, 2, 100);
    fs.cut_power_after(0);
    assert!(!fs.power_cut_waits());
    assert_eq!(detail(fs.create_dir(p("/e"))), Some(POWER_OFF_DETAIL.to_string()));
    Ok(())
}

#[test]
fn reordering_means_a_kept_change_after_a_lost_one_of_another_file() {
    let files: BTreeMap<u64, Ino> = [(1, 10), (2, 11), (3, 10)].into_iter().collect();
    let fates = |f: [Fate; 3]| -> BTreeMap<u64, Fate> { (1..=3).zip(f).collect() };
    use Fate::{Applied, Dropped, Torn, Trashed};
    assert!(!reordered(&fates([Applied, Applied, Dropped]), &files), "a prefix survived");
    assert!(!reordered(&fates([Applied, Dropped, Dropped]), &files));
    assert!(reordered(&fates([Dropped, Applied, Dropped]), &files), "file 11 kept a later change");
    assert!(reordered(&fates([Applied, Dropped, Torn]), &files), "file 10 kept a later, torn change");
    assert!(reordered(&fates([Applied, Dropped, Trashed]), &files));
    assert!(
        !reordered(&fates([Dropped, Dropped, Applied]), &[(1, 10), (2, 10), (3, 10)].into_iter().collect()),
        "one file: not across files"
    );
}

/// A durable file `/d/<name>` holding `len` copies of `fill`.
fn synced_file(fs: &MemFs, name: &str, fill: u8, len: usize) -> VfsResult<Box<dyn VfsFile>> {
    let path = format!("/d/{name}");
    let file = write_file(fs, p(&path), &vec![fill; len])?;
    file.sync()?;
    fs.sync_dir(p("/d"))?;
    Ok(file)
}

fn sector(image: &[u8], index: usize) -> &[u8] {
    let start = index * SECTOR_BYTES as usize;
    image.get(start..(start + SECTOR_BYTES as usize).min(image.len())).unwrap_or(&[])
}

#[test]
fn crash_keep_all_applies_every_pending_operation() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 2048)?;
    fs.set_faults(Faults { crash_keep_bp: 10_000, ..Faults::default() });
    write_all_at(file.as_ref(), b"new", 700)?;
    file.set_len(1500)?;
    write_all_at(file.as_ref(), b"tail", 1600)?;
    let live = fs.read("/d/a");
    fs.crash();
    assert_eq!(fs.read("/d/a"), live, "{}", fs.dump());
    Ok(())
}

#[test]
fn crash_keeps_an_in_order_subset_of_pending_writes() -> VfsResult<()> {
    let mut mixed = false;
    for seed in 0..32 {
        let fs = fs_with_dir()?;
        fs.set_seed(seed);
        let a = synced_file(&fs, "a", b'o', 1024)?;
        let b = synced_file(&fs, "b", b'o', 1024)?;
        fs.set_faults(Faults { crash_keep_bp: 5_000, ..Faults::default() });
        write_all_at(a.as_ref(), &[b'1'; 512], 0)?;
        write_all_at(a.as_ref(), &[b'2'; 512], 0)?;
        write_all_at(b.as_ref(), &[b'3'; 512], 512)?;
        fs.crash();
        let a = fs.read("/d/a").unwrap_or_default();
        let b = fs.read("/d/b").unwrap_or_default();
        // Each sector holds one version it had since the last sync, never a blend.
        let a0 = sector(&a, 0).first().copied();
        assert!(matches!(a0, Some(b'o' | b'1' | b'2')), "{a0:?}");
        assert!(sector(&a, 0).iter().all(|x| Some(*x) == a0));
        assert_eq!(sector(&a, 1), &[b'o'; 512][..]);
        let b1 = sector(&b, 1).first().copied();
        assert!(matches!(b1, Some(b'o' | b'3')) && sector(&b, 1).iter().all(|x| Some(*x) == b1));
        mixed |= a0 == Some(b'o') && b1 == Some(b'3');
    }
    assert!(mixed, "a later write to another file survived while an earlier one was lost");
    Ok(())
}

#[test]
fn trashed_write_is_garbage_only_where_it_wrote_by_default() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 2048)?;
    fs.set_faults(Faults { crash_trash_bp: 10_000, ..Faults::default() });
    write_all_at(file.as_ref(), b"0123456789", 1020)?; // sectors 1 and 2
    fs.crash();
    let image = fs.read("/d/a").unwrap_or_default();
    assert_eq!(image.len(), 2048);
    let written = image.get(1020..1030).unwrap_or_default();
    assert!(written != b"0123456789" && written != [b'o'; 10], "{written:?}");
    let untouched = image.iter().enumerate().filter(|(i, _)| !(1020..1030).contains(i));
    assert!(
        untouched.clone().all(|(_, b)| *b == b'o'),
        "power-safe overwrite: no byte outside the write changes"
    );
    assert_eq!(untouched.count(), 2038);
    Ok(())
}

#[test]
fn trashed_write_spills_over_its_whole_sectors_without_power_safe_overwrite() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 2048)?;
    fs.set_faults(Faults { crash_trash_bp: 10_000, trash_spills: true, ..Faults::default() });
    write_all_at(file.as_ref(), b"0123456789", 1020)?; // sectors 1 and 2
    fs.crash();
    let image = fs.read("/d/a").unwrap_or_default();
    assert_eq!(image.len(), 2048);
    assert_eq!(sector(&image, 0), &[b'o'; 512][..]);
    assert_eq!(sector(&image, 3), &[b'o'; 512][..]);
    for s in [1, 2] {
        assert!(sector(&image, s).iter().filter(|x| **x == b'o').count() < 64, "sector {s} is garbage");
    }
    assert_eq!(fs.stats().torn_writes, 1);
    Ok(())
}

#[test]
fn torn_write_lands_some_of_its_sectors() -> VfsResult<()> {
    let mut torn_seen = false;
    for seed in 0..16 {
        let fs = fs_with_dir()?;
        fs.set_seed(seed);
        let file = synced_file(&fs, "a", b'o', 2048)?;
        fs.set_faults(Faults { crash_keep_bp: 10_000, torn_bp: 10_000, ..Faults::default() });
        write_all_at(file.as_ref(), &[b'n'; 2048], 0)?;
        fs.crash();
        let image = fs.read("/d/a").unwrap_or_default();
        let (mut old, mut new, mut garbage) = (0, 0, 0);
        for s in 0..4 {
            match sector(&image, s) {
                x if x == [b'o'; 512] => old += 1,
                x if x == [b'n'; 512] => new += 1,
                _ => garbage += 1,
            }
        }
        assert!(garbage <= 1, "at most the torn sector holds garbage");
        torn_seen |= old > 0 && new > 0;
    }
    assert!(torn_seen);
    Ok(())
}

#[test]
fn prefix_only_crash_keeps_a_prefix_of_the_global_order() -> VfsResult<()> {
    let mut lengths = BTreeSet::new();
    for seed in 0..40 {
        let fs = fs_with_dir()?;
        fs.set_seed(seed);
        let a = synced_file(&fs, "a", b'o', 2048)?;
        let b = synced_file(&fs, "b", b'o', 2048)?;
        fs.set_faults(Faults { crash_prefix_only: true, ..Faults::default() });
        // Issue order: a0 b0 a1 b1, one sector each.
        let order = [(&a, 0u64), (&b, 0), (&a, 1), (&b, 1)];
        for (file, s) in order {
            write_all_at(file.as_ref(), &[b'n'; 512], s * SECTOR_BYTES)?;
        }
        fs.crash();
        let images = [fs.read("/d/a").unwrap_or_default(), fs.read("/d/b").unwrap_or_default()];
        let landed: Vec<bool> = [(0, 0), (1, 0), (0, 1), (1, 1)]
            .iter()
            .map(|(f, s)| images.get(*f).is_some_and(|i| sector(i, *s) == [b'n'; 512]))
            .collect();
        let kept = landed.iter().take_while(|x| **x).count();
        assert!(landed.iter().skip(kept).all(|x| !x), "{landed:?} is not a prefix");
        lengths.insert(kept);
    }
    assert!(lengths.len() >= 3, "cuts vary: {lengths:?}");
    Ok(())
}

#[test]
fn early_write_back_makes_data_durable_without_a_sync() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 512)?;
    fs.set_faults(Faults { writeback_bp: 10_000, ..Faults::default() });
    write_all_at(file.as_ref(), b"early", 0)?;
    fs.create_dir(p("/e"))?; // any mutating call may write back
    assert!(fs.stats().writebacks >= 1);
    fs.crash();
    assert_eq!(fs.read("/d/a").and_then(|d| d.get(..5).map(<[u8]>::to_vec)), Some(b"early".to_vec()));
    Ok(())
}

#[test]
fn a_dropped_truncate_brings_the_tail_back() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 1000)?;
    fs.set_faults(Faults { crash_keep_bp: 10_000, drop_truncate_bp: 10_000, ..Faults::default() });
    file.set_len(10)?;
    write_all_at(file.as_ref(), b"x", 0)?;
    fs.crash();
    let image = fs.read("/d/a").unwrap_or_default();
    assert_eq!(image.len(), 1000, "the shrink was undone");
    assert_eq!(image.first(), Some(&b'x'), "the later write still landed");
    Ok(())
}

#[test]
fn transient_read_and_write_errors_change_nothing() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 16)?;
    fs.set_faults(Faults { read_eio_bp: 10_000, write_eio_bp: 10_000, ..Faults::default() });
    let mut buf = [0u8; 4];
    assert_eq!(detail(file.read_at(&mut buf, 0)).as_deref(), Some("EIO (transient)"));
    assert_eq!(kind(file.write_at(b"x", 0)), Some(VfsErrorKind::Other));
    assert_eq!(fs.stats().io_errors, 2);
    fs.set_faults(Faults::default());
    assert_eq!(file.read_at(&mut buf, 0)?, 4, "transient: the next call works");
    assert_eq!(&buf, b"oooo");
    Ok(())
}

#[test]
fn sync_errors_poison_and_a_failed_sync_dir_leaves_entries_volatile() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 4)?;
    fs.set_faults(Faults { sync_eio_bp: 10_000, ..Faults::default() });
    write_all_at(file.as_ref(), b"nn", 0)?;
    assert_eq!(detail(file.sync()).as_deref(), Some("EIO"));
    assert_eq!(fs.read("/d/a").as_deref(), Some(&b"oooo"[..]), "pending data dropped");
    assert_eq!(kind(file.len()), Some(VfsErrorKind::Poisoned));
    write_file(&fs, p("/d/b"), b"b")?;
    assert_eq!(detail(fs.sync_dir(p("/d"))).as_deref(), Some("EIO"));
    assert_eq!(fs.sync_failures(), 2);
    fs.crash();
    assert_eq!(fs.read("/d/b"), None, "the failed sync_dir made nothing durable");
    Ok(())
}

#[test]
fn a_bad_inode_fails_writes_and_syncs_until_repaired() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 4)?;
    fs.set_faults(Faults { bad_inode_bp: 10_000, ..Faults::default() });
    assert_eq!(detail(file.write_at(b"x", 0)).as_deref(), Some("EIO (the inode went bad)"));
    fs.set_faults(Faults::default());
    assert_eq!(detail(file.write_at(b"x", 0)).as_deref(), Some("EIO (the inode is bad)"));
    let other = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    assert_eq!(detail(other.sync()).as_deref(), Some("EIO"), "persistent: every handle");
    fs.repair();
    let fresh = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    assert_eq!(fresh.write_at(b"x", 0)?, 1);
    fresh.sync()?;
    Ok(())
}

#[test]
fn a_latent_sector_error_fails_reads_until_the_sector_is_rewritten() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let file = synced_file(&fs, "a", b'o', 1024)?;
    fs.set_faults(Faults { latent_sector_bp: 10_000, ..Faults::default() });
    let mut buf = [0u8; 16];
    assert!(detail(file.read_at(&mut buf, 600)).is_some_and(|d| d.contains("latent error in sector 1")));
    fs.set_faults(Faults::default());
    assert!(file.read_at(&mut buf, 1000).is_err(), "the sector stays bad");
    assert_eq!(file.read_at(&mut buf, 0)?, 16, "other sectors read fine");
    fs.crash();
    let file = fs.open(p("/d/a"), OpenMode::ReadWrite)?;
    assert!(file.read_at(&mut buf, 512).is_err(), "latent errors survive a crash");
    write_all_at(file.as_ref(), &[b'n'; 100], 512)?;
    assert!(file.read_at(&mut buf, 512).is_err(), "a partial write does not remap");
    write_all_at(file.as_ref(), &[b'n'; 512], 512)?;
    assert_eq!(file.read_at(&mut buf, 512)?, 16, "a whole-sector write remaps it");
    assert_eq!(&buf, &[b'n'; 16]);
    Ok(())
}

#[test]
fn short_reads_and_writes_move_fewer_bytes_and_the_helpers_loop() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    fs.set_faults(Faults { short_io_bp: 10_000, ..Faults::default() });
    let file = fs.open(p("/d/a"), OpenMode::CreateNew)?;
    let n = file.write_at(b"0123456789", 0)?;
    assert!((1..10).contains(&n), "{n}");
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    write_all_at(file.as_ref(), &data, 0)?;
    let mut buf = vec![0u8; 5000];
    let got = file.read_at(&mut buf, 0)?;
    assert!((1..5000).contains(&got), "{got}");
    assert_eq!(sila_sqlite::vfs::read_full(file.as_ref(), &mut buf, 0)?, 5000);
    assert_eq!(buf, data);
    assert!(fs.stats().short_ios >= 3);
    Ok(())
}

#[test]
fn bit_rot_flips_one_stored_bit_only_in_files_the_filter_accepts() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    synced_file(&fs, "record", 0, 64)?;
    synced_file(&fs, "db", 0, 64)?;
    fs.set_rot_filter(Some(|path: &Path, _| path.ends_with("record")));
    fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
    assert_eq!(read_file(&fs, p("/d/db"))?, vec![0u8; 64], "not accepted: never rots");
    let first = read_file(&fs, p("/d/record"))?;
    assert_eq!(first.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "one bit flipped");
    fs.set_faults(Faults::default());
    fs.crash();
    assert_eq!(read_file(&fs, p("/d/record"))?, first, "the rot is on the medium");
    assert_eq!(fs.rotted(), vec![PathBuf::from("/d/record")]);
    Ok(())
}

#[test]
fn the_rot_filter_sees_the_read_only_flag_which_follows_renames_and_crashes() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    synced_file(&fs, "snap", 0, 64)?;
    fs.set_rot_filter(Some(|_: &Path, read_only| read_only));
    fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
    assert_eq!(read_file(&fs, p("/d/snap"))?, vec![0u8; 64], "not sealed: never rots");
    fs.set_read_only(p("/d/snap"), true)?;
    fs.rename(p("/d/snap"), p("/d/sealed"))?;
    fs.sync_dir(p("/d"))?;
    fs.set_faults(Faults::default());
    fs.crash();
    fs.set_faults(Faults { bitrot_bp: 10_000, ..Faults::default() });
    let rotten = read_file(&fs, p("/d/sealed"))?;
    assert_eq!(rotten.iter().map(|b| b.count_ones()).sum::<u32>(), 1, "sealed: rots");
    assert!(fs.set_read_only(p("/d/missing"), true).is_err());
    Ok(())
}

#[test]
fn slow_calls_report_latency_to_the_sink() -> VfsResult<()> {
    let fs = fs_with_dir()?;
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sink = Arc::clone(&total);
    fs.set_latency_sink(Some(LatencySink(Arc::new(move |ms| {
        sink.fetch_add(ms, Ordering::SeqCst);
    }))));
    fs.set_faults(Faults { slow_io_bp: 10_000, slow_io_ms_max: 7, ..Faults::default() });
    let file = synced_file(&fs, "a", b'o', 8)?; // a write, a sync and a sync_dir
    let mut buf = [0u8; 8];
    file.read_at(&mut buf, 0)?;
    let stats = fs.stats();
    assert_eq!(stats.slow_ios, 4);
    assert!((4..=28).contains(&stats.latency_ms), "{stats:?}");
    assert_eq!(total.load(Ordering::SeqCst), stats.latency_ms);
    Ok(())
}

#[test]
fn the_same_seed_gives_the_same_crash() -> VfsResult<()> {
    let run = |seed: u64| -> VfsResult<Option<Vec<u8>>> {
        let fs = fs_with_dir()?;
        fs.set_seed(seed);
        let file = synced_file(&fs, "a", b'o', 4096)?;
        fs.set_faults(Faults {
            crash_keep_bp: 5_000,
            crash_trash_bp: 2_000,
            torn_bp: 5_000,
            ..Faults::default()
        });
        for i in 0..8u64 {
            write_all_at(file.as_ref(), &[b'a' + i as u8; 700], i * 450)?;
        }
        fs.crash();
        Ok(fs.read("/d/a"))
    };
    assert_eq!(run(5)?, run(5)?);
    assert_ne!(run(5)?, run(6)?);
    Ok(())
}
