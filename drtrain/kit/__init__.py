"""Infrastructure every domain package uses: settings, db, models, storage, broker, errors."""
