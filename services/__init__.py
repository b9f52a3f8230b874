"""Small independent services that react to the trail. None of them schedules anything."""
