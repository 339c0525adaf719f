DROP TABLE recorder_offsets;
DROP TABLE admin_audit;
DROP TABLE trading_state_changes;
DROP TABLE signal_rejections;
DROP TABLE pnl_snapshots;
DROP TABLE fills;
DROP TABLE orders;
