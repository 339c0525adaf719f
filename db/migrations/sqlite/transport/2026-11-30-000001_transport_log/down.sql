DROP TABLE watermarks;
DROP TABLE marks;
DROP TABLE kv;
DROP TABLE committed;
DROP TABLE log;
DROP TABLE topics;
